#!/usr/bin/env python3
"""Side-by-side load benchmark: globaldns beside Knot DNS, NSD, gdnsd and the C echo responder.

    python3 benches/load.py [--names 1000] [--rounds 3] [--seconds 10] [--servers globaldns,knot,nsd,gdnsd,echo]
    python3 benches/load.py --forwarding [--names 1000] [--rounds 3] [--seconds 10] [--pinning pinned,unpinned]

Generates N names (1-4 A records each, every fifth with AAAA, a few wildcards) as ServiceEntry
YAML for globaldns and, through `globaldns records --format zone`, as the zone file the others
load. Queries: ~80 % existing A, 10 % AAAA, 10 % NXDOMAIN. Each server runs pinned to CPU 1 and
dnsperf to CPU 0 (`taskset`, `nice -n -5`), interleaved A B C D over the rounds. Printed per
server: QPS at full load (dnsperf -q 100), lost queries, server CPU per query and QPS per server
core (from /proc/PID/stat), latency p50/p99 at a fixed rate (dnsperf -Q with -v), the time from
start to the first answer (and the server's CPU time by then: the machine may be shared), its RSS
after the run and its peak RSS (VmHWM), and ratios to the C echo responder and to Knot from the
same run. The echo responder (benches/echo.c, built with cc into the temp dir) answers every
query with one fixed A record through recvmmsg/sendmmsg in batches of 64: no server can answer
more cheaply, so it is the ceiling. Knot's UDP workers are set to one, and since knotd pins each
worker to a CPU of its own choosing (CPU 0, dnsperf's, here) every thread is moved back to CPU 1
once it runs; NSD's response-rate-limiting is off. Needs: a release build (cargo build --release), dnsperf,
knotd, nsd, gdnsd (Debian packages), cc. Targets only 127.0.0.1.

--forwarding: the names live in `cluster.local` on a Knot upstream (kube-dns' part); the same
queries (90 % existing A, 10 % NXDOMAIN) go to Knot directly and through each forwarder, none
caching: globaldns (`--upstream`), dnsmasq (`--cache-size=0`) and unbound (a stub zone,
`cache-max-ttl: 0`, one thread). Pinned: Knot and the forwarder share CPU 1, dnsperf has CPU 0
(one client). Unpinned: nothing is pinned, every process may use both CPUs, dnsperf runs four
clients (`-c 4`). `--pinning` lists the modes measured in the same run, interleaved (both by
default). Printed per mode: QPS, forwarder CPU per query, p50/p99 at a fixed rate, the p50 added
to the direct one, and QPS ratios to dnsmasq. Needs dnsmasq and unbound too.
"""

import argparse
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "globaldns")
HZ = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate(n, workdir):
    rng = random.Random(42)
    docs, names, v6names = [], [], []
    for i in range(n):
        host = f"svc{i}.ns{i % 50}.global"
        count = 1 + i % 4
        addrs = [f"240.{1 + i // 65025 % 200}.{i // 255 % 255}.{1 + (i * 4 + k) % 254}" for k in range(count)]
        if i % 5 == 0:
            addrs.append(f"2001:db8::{i >> 16:x}:{i & 0xFFFF:x}")
            v6names.append(host)
        names.append(host)
        docs.append(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            f"metadata: {{name: s{i}, namespace: ns{i % 50}}}\n"
            f"spec: {{hosts: [\"{host}\"], addresses: [{', '.join(repr(a) for a in addrs)}], resolution: STATIC}}\n"
        )
    for k in range(5):
        docs.append(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            f"metadata: {{name: w{k}, namespace: wild}}\n"
            f"spec: {{hosts: [\"*.wild{k}.global\"], addresses: ['240.250.0.{k + 1}'], resolution: STATIC}}\n"
        )
        names.append(f"x{k}.wild{k}.global")
    entries = os.path.join(workdir, "entries.yaml")
    with open(entries, "w") as f:
        f.write("---\n".join(docs))
    zone = subprocess.run([BIN, "records", "--entries", entries, "--format", "zone"], check=True, capture_output=True, text=True).stdout
    zone_file = os.path.join(workdir, "global.zone")
    with open(zone_file, "w") as f:
        # The peers want an address for the NS target; globaldns does not serve that name.
        f.write(zone.replace("; zone global, serial 0\n", "; zone global\n") + "ns.dns.global.\t30\tIN\tA\t127.0.0.1\n")
    queries = os.path.join(workdir, "queries.txt")
    with open(queries, "w") as f:
        for _ in range(200_000):
            r = rng.random()
            if r < 0.8:
                f.write(f"{rng.choice(names)} A\n")
            elif r < 0.9:
                f.write(f"{rng.choice(v6names)} AAAA\n")
            else:
                f.write(f"nx{rng.randrange(10**6)}.ns{rng.randrange(50)}.global A\n")
    return entries, zone_file, queries


def answers(port, name, timeout=0.05):
    """Whether the server on `port` answers `name` A with NOERROR and at least one record."""
    qid = random.randrange(1 << 16)
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0\0\1\0\1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(query, ("127.0.0.1", port))
            reply = s.recv(4096)
        except OSError:  # not bound yet (port unreachable) or no answer in time
            return False
    if len(reply) < 12:
        return False
    rid, flags, _, ancount = struct.unpack(">HHHH", reply[:8])
    return rid == qid and flags & 0x800F == 0x8000 and ancount > 0


def build_echo(workdir):
    """The C echo responder, compiled into `workdir`."""
    exe = os.path.join(workdir, "echo-responder")
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(ROOT, "benches", "echo.c")], check=True)
    return exe


def start(server, port, workdir, entries, zone_file):
    """Starts `server` pinned to CPU 1; returns it and the seconds until it answered."""
    d = os.path.join(workdir, server)
    os.makedirs(d, exist_ok=True)
    pin = ["taskset", "-c", "1", "nice", "-n", "-5"]
    if server == "globaldns":
        cmd = [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--admin", "127.0.0.1:0", "--entries", entries, "--upstream", "127.0.0.1:9"]
    elif server == "knot":
        with open(os.path.join(d, "knot.conf"), "w") as f:
            f.write(
                f'server:\n  rundir: "{d}"\n  listen: 127.0.0.1@{port}\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n'
                f'database:\n  storage: "{d}"\nlog:\n  - target: stderr\n    any: error\n'
                f'template:\n  - id: default\n    storage: "{d}"\nzone:\n  - domain: global\n    file: "{zone_file}"\n'
            )
        cmd = ["knotd", "-c", os.path.join(d, "knot.conf")]
    elif server == "nsd":
        with open(os.path.join(d, "nsd.conf"), "w") as f:
            f.write(
                f'server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  username: ""\n  chroot: ""\n  zonesdir: "{d}"\n'
                f'  pidfile: "{d}/nsd.pid"\n  database: ""\n  xfrdfile: "{d}/xfrd.state"\n  zonelistfile: "{d}/zone.list"\n'
                f'  rrl-ratelimit: 0\n  verbosity: 0\nremote-control:\n  control-enable: no\n'
                f'zone:\n  name: global\n  zonefile: "{zone_file}"\n'
            )
        cmd = ["nsd", "-d", "-c", os.path.join(d, "nsd.conf")]
    elif server == "gdnsd":
        os.makedirs(os.path.join(d, "zones"), exist_ok=True)
        shutil.copy(zone_file, os.path.join(d, "zones", "global"))
        with open(os.path.join(d, "config"), "w") as f:
            f.write(f"options => {{\n  listen => [ 127.0.0.1 ]\n  dns_port => {port}\n  udp_threads => 1\n  tcp_threads => 1\n"
                    f"  run_dir => {d}/run\n  state_dir => {d}/state\n}}\n")
        cmd = ["gdnsd", "-c", d, "start"]
    elif server == "echo":
        cmd = [os.path.join(workdir, "echo-responder"), str(port)]
    else:
        raise SystemExit(f"unknown server {server}")
    log = open(os.path.join(d, "log"), "w")
    started = time.monotonic()
    proc = subprocess.Popen(pin + cmd, stdout=log, stderr=log)
    while time.monotonic() - started < 120:  # large zones take a while to load
        if answers(port, "svc1.ns1.global"):
            return proc, time.monotonic() - started
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    proc.kill()
    raise SystemExit(f"{server} did not start: see {d}/log")


def generate_upstream(n, workdir):
    """A cluster.local zone of n names for the Knot upstream, and the queries for it."""
    rng = random.Random(42)
    names = [f"svc{i}.ns{i % 50}.svc.cluster.local" for i in range(n)]
    zone_file = os.path.join(workdir, "cluster.local.zone")
    with open(zone_file, "w") as f:
        f.write("$ORIGIN cluster.local.\n$TTL 30\n@ SOA ns.dns hostmaster 1 3600 600 86400 30\n@ NS ns.dns\nns.dns A 127.0.0.1\n")
        for i, name in enumerate(names):
            f.write(f"{name}. A 10.{i // 65025 % 200}.{i // 255 % 255}.{1 + i % 254}\n")
    queries = os.path.join(workdir, "fwd-queries.txt")
    with open(queries, "w") as f:
        for _ in range(200_000):
            if rng.random() < 0.9:
                f.write(f"{rng.choice(names)} A\n")
            else:
                f.write(f"nx{rng.randrange(10**6)}.ns{rng.randrange(50)}.svc.cluster.local A\n")
    return zone_file, queries


def start_knot(d, port, domain, zone_file):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "knot.conf"), "w") as f:
        f.write(
            f'server:\n  rundir: "{d}"\n  listen: 127.0.0.1@{port}\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n'
            f'database:\n  storage: "{d}"\nlog:\n  - target: stderr\n    any: error\n'
            f'template:\n  - id: default\n    storage: "{d}"\nzone:\n  - domain: {domain}\n    file: "{zone_file}"\n'
        )
    return ["knotd", "-c", os.path.join(d, "knot.conf")]


def spawn(cmd, d, port, probe, cpu=1):
    """Starts `cmd` on `cpu` (None: unpinned)."""
    os.makedirs(d, exist_ok=True)
    log = open(os.path.join(d, "log"), "w")
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    proc = subprocess.Popen(pin + ["nice", "-n", "-5"] + cmd, stdout=log, stderr=log)
    for _ in range(600):
        if answers(port, probe, timeout=1):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{cmd[0]} did not start: see {d}/log")


def start_forwarder(name, port, upstream, d):
    os.makedirs(d, exist_ok=True)
    if name == "globaldns":
        examples = os.path.join(ROOT, "deploy", "examples")
        return [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--admin", "127.0.0.1:0", "--entries", examples, "--upstream", f"127.0.0.1:{upstream}"]
    if name == "dnsmasq":
        return ["dnsmasq", "-d", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1",
                "--cache-size=0", "--pid-file=", f"--port={port}", f"--server=127.0.0.1#{upstream}"]
    if name == "unbound":
        conf = os.path.join(d, "unbound.conf")
        with open(conf, "w") as f:
            f.write(
                f'server:\n  interface: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  do-daemonize: no\n  use-syslog: no\n  logfile: ""\n'
                f'  username: ""\n  chroot: ""\n  directory: "{d}"\n  pidfile: ""\n  num-threads: 1\n  do-not-query-localhost: no\n'
                f'  module-config: "iterator"\n  access-control: 127.0.0.0/8 allow\n  cache-max-ttl: 0\n  cache-max-negative-ttl: 0\n'
                f'  ratelimit: 0\n  ip-ratelimit: 0\nremote-control:\n  control-enable: no\n'
                f'stub-zone:\n  name: "cluster.local"\n  stub-addr: 127.0.0.1@{upstream}\n'
            )
        return ["unbound", "-d", "-c", conf]
    raise SystemExit(f"unknown forwarder {name}")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def med(v):
    v = sorted(x for x in v if x == x)
    return v[len(v) // 2] if v else float("nan")


def measure(port, pids, queries, seconds, rate, results):
    cpu0 = sum(cpu_seconds(p) for p in pids)
    out = dnsperf(port, queries, seconds)
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    qps = field(out, "Queries per second:")
    completed = field(out, "Queries completed:")
    results["qps"].append(qps)
    results["lost"].append(field(out, "Queries lost:"))
    results["cpu"].append(cpu / completed if completed else float("nan"))
    lat = latencies(dnsperf(port, queries, max(3, seconds // 2), rate=rate))
    if lat:
        results["p50"].append(lat[len(lat) // 2])
        results["p99"].append(lat[min(len(lat) - 1, len(lat) * 99 // 100)])
    return qps


# How dnsperf runs: pinned to CPU 0 with one client, unless a forwarding pass unpins it.
DNSPERF = {"pin": ["taskset", "-c", "0"], "clients": 1}


def forwarding(args):
    candidates = ["direct", "globaldns", "dnsmasq", "unbound"]
    modes = args.pinning.split(",")
    results = {(m, c): {"qps": [], "lost": [], "cpu": [], "p50": [], "p99": []} for m in modes for c in candidates}
    rate = args.rate if args.rate_given else 5000
    all_cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory() as workdir:
        zone_file, queries = generate_upstream(args.names, workdir)
        probe = "svc1.ns1.svc.cluster.local"
        knot_port = free_port()
        upstream_dir = os.path.join(workdir, "upstream")
        knot = spawn(start_knot(upstream_dir, knot_port, "cluster.local", zone_file), upstream_dir, knot_port, probe, args.upstream_cpu)
        try:
            for rnd in range(args.rounds):
                for mode in modes:
                    pinned = mode == "pinned"
                    # knotd pins its workers itself: back to the upstream's CPU, or to every CPU.
                    repin(knot.pid, args.upstream_cpu if pinned else all_cpus)
                    DNSPERF.update(pin=["taskset", "-c", "0"] if pinned else [], clients=1 if pinned else 4)
                    for c in candidates:
                        r = results[(mode, c)]
                        if c == "direct":
                            qps = measure(knot_port, descendants(knot.pid), queries, args.seconds, rate, r)
                        else:
                            port = free_port()
                            d = os.path.join(workdir, c)
                            proc = spawn(start_forwarder(c, port, knot_port, d), d, port, probe, 1 if pinned else None)
                            try:
                                qps = measure(port, descendants(proc.pid), queries, args.seconds, rate, r)
                            finally:
                                stop(proc)
                        print(f"round {rnd + 1} {mode:8} {c:9}: {qps:9.0f} q/s, cpu/query {r['cpu'][-1] * 1e6:6.2f} us", flush=True)
        finally:
            stop(knot)
    for mode in modes:
        direct_p50 = med(results[(mode, "direct")]["p50"])
        base = med(results[(mode, "dnsmasq")]["qps"])
        print(f"\n{mode}: forwarding to Knot, N = {args.names} names, {args.rounds} rounds of {args.seconds} s, medians; latency at {rate} q/s")
        print(f"{'path':10} {'QPS':>9} {'lost':>6} {'CPU/query':>10} {'p50':>8} {'p99':>8} {'added p50':>10}   QPS to dnsmasq")
        for c in candidates:
            r = results[(mode, c)]
            cpu = med(r["cpu"]) * 1e6
            added = (med(r["p50"]) - direct_p50) * 1e6
            print(f"{c:10} {med(r['qps']):9.0f} {med(r['lost']):6.0f} {cpu:8.2f}us {med(r['p50']) * 1e6:6.0f}us {med(r['p99']) * 1e6:6.0f}us {added:8.0f}us   {med(r['qps']) / base:5.2f}x")


def repin(pid, cpu):
    """Moves every thread of `pid` to `cpu` (knotd pins its workers itself at start)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        subprocess.run(["taskset", "-p", "-c", str(cpu), tid], capture_output=True)


def memory(pids):
    """(RSS, peak RSS) in MiB, summed over `pids` (VmRSS and VmHWM of /proc/PID/status)."""
    rss = peak = 0
    for pid in pids:
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        rss += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        peak += int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
    return rss / 1024, peak / 1024


def cpu_seconds(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / HZ


def descendants(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [d for c in out for d in descendants(int(c))]


def dnsperf(port, queries, seconds, rate=None):
    cmd = DNSPERF["pin"] + ["nice", "-n", "-5", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(seconds), "-q", "100"]
    cmd += ["-c", str(DNSPERF["clients"])]
    if rate:
        cmd += ["-Q", str(rate), "-v"]
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def field(text, label):
    m = re.search(re.escape(label) + r"\s+([\d.]+)", text)
    return float(m.group(1)) if m else float("nan")


def latencies(verbose):
    # dnsperf -v: "> NOERROR name A 0.000123" per response (the last field is the latency in s)
    out = []
    for line in verbose.splitlines():
        if line.startswith(">"):
            try:
                out.append(float(line.split()[-1]))
            except ValueError:
                pass
    out.sort()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=20000, help="fixed rate for the latency runs")
    ap.add_argument("--servers", default="globaldns,knot,nsd,gdnsd,echo")
    ap.add_argument("--forwarding", action="store_true", help="the forwarding benchmark instead")
    ap.add_argument("--upstream-cpu", type=int, default=1, help="CPU of the forwarding upstream when pinned (1: beside the forwarder; 0: beside dnsperf)")
    ap.add_argument("--pinning", default="pinned,unpinned", help="forwarding: modes measured in the same run, interleaved (pinned, unpinned)")
    args = ap.parse_args()
    args.rate_given = any(a.startswith("--rate") for a in sys.argv[1:])
    if not os.path.exists(BIN):
        raise SystemExit("build first: cargo build --release")
    if args.forwarding:
        return forwarding(args)
    servers = args.servers.split(",")
    keys = ["qps", "lost", "cpu", "p50", "p99", "start", "start_cpu", "rss", "peak"]
    results = {s: {k: [] for k in keys} for s in servers}
    with tempfile.TemporaryDirectory() as workdir:
        entries, zone_file, queries = generate(args.names, workdir)
        if "echo" in servers:
            build_echo(workdir)
        for rnd in range(args.rounds):
            for server in servers:
                port = free_port()
                proc, took = start(server, port, workdir, entries, zone_file)
                r = results[server]
                r["start"].append(took)
                r["start_cpu"].append(sum(cpu_seconds(p) for p in descendants(proc.pid)))
                for pid in descendants(proc.pid):
                    repin(pid, 1)
                try:
                    qps = measure(port, descendants(proc.pid), queries, args.seconds, args.rate, r)
                    rss, peak = memory(descendants(proc.pid))
                    r["rss"].append(rss)
                    r["peak"].append(peak)
                finally:
                    stop(proc)
                print(f"round {rnd + 1} {server:9}: {qps:9.0f} q/s, cpu/query {r['cpu'][-1] * 1e6:6.2f} us, "
                      f"answering after {took:.2f} s ({r['start_cpu'][-1]:.2f} s CPU), RSS {rss:.0f} MiB (peak {peak:.0f})", flush=True)

    bases = [b for b in ("echo", "knot") if b in servers] or servers[:1]

    def per_core(s):
        cpu = med(results[s]["cpu"])
        return 1 / cpu if cpu == cpu and cpu > 0 else float("nan")

    print(f"\nN = {args.names} names, {args.rounds} rounds of {args.seconds} s, medians; latency at {args.rate} q/s;"
          f" start: to the first answer (server CPU time by then); RSS after the run (peak)")
    ratios = "".join(f"  {'vs ' + b + ': QPS, /core':>21}" for b in bases)
    print(f"{'server':10} {'QPS':>9} {'lost':>6} {'CPU/query':>10} {'QPS/core':>9} {'p50':>8} {'p99':>8} {'start':>15} {'RSS':>15}{ratios}")
    for s in servers:
        r = results[s]
        qps = med(r["qps"])
        start_text = f"{med(r['start']):.2f}s ({med(r['start_cpu']):.2f})"
        rss_text = f"{med(r['rss']):.0f} ({med(r['peak']):.0f}) MiB"
        ratio = "".join(f"  {qps / med(results[b]['qps']):9.2f}x {per_core(s) / per_core(b):9.2f}x" for b in bases)
        print(f"{s:10} {qps:9.0f} {med(r['lost']):6.0f} {med(r['cpu']) * 1e6:8.2f}us {per_core(s):9.0f} {med(r['p50']) * 1e6:6.0f}us"
              f" {med(r['p99']) * 1e6:6.0f}us {start_text:>15} {rss_text:>15}{ratio}")


if __name__ == "__main__":
    sys.exit(main())
