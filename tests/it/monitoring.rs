//! deploy/monitoring/ with the real tools of Debian's `prometheus` package: the rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`, each alert firing and
//! quiet), the PrometheusRule holds the same rules, and a real Prometheus, scraping running
//! globaldns servers with the shipped scrape job and evaluating the shipped rules, finds a
//! series for every selector of the rules and the dashboard and fires the alerts: not ready
//! for a server that cannot sync its local cluster (and not for one ready without a remote
//! cluster past --sync-timeout), an upstream down and every upstream down as the test kills
//! them, and down when a server stops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::clusters::Mesh;
use crate::deploy::{deploy_dir, kustomize, objects, validate};
use crate::kubeapi::KubeApi;
use crate::support::get;
use crate::support::*;
use crate::upstream::{Behaviour, Upstream};

fn monitoring_dir() -> PathBuf {
    deploy_dir().join("monitoring")
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The shipped rules file.
fn rules() -> Value {
    yaml(&monitoring_dir().join("rules.yaml"))
}

/// Every rule of the rules file.
fn each_rule(rules: &Value) -> impl Iterator<Item = &Value> {
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
}

/// The dashboard.
fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(monitoring_dir().join("grafana-dashboard.json")).unwrap()).unwrap()
}

/// The PromQL of every panel of the dashboard, its variables as Grafana would fill them in
/// (every pod; a rate window of a minute).
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$__rate_interval", "1m")
        })
        .collect()
}

/// The metric selector of the dashboard's `label_values(SELECTOR, label)` variables.
fn dashboard_variable_selectors(dashboard: &Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = v["query"]["query"].as_str().unwrap();
            let inner = q.strip_prefix("label_values(").expect("label_values(…)");
            inner[..inner.rfind(',').unwrap()].to_string()
        })
        .collect()
}

/// Metric selectors (`name` or `name{matchers}`) in a PromQL expression: the names of series,
/// not of functions, aggregations, keywords or grouping labels.
fn selectors(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 19] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan", // operators, modifiers, numbers
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile", // aggregations, which a grouping may follow before their `(`
    ];
    const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let b = expr.as_bytes();
    let name_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let skip_to = |mut i: usize, end: u8| {
        while i < b.len() && b[i] != end {
            if b[i] == b'"' {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += 1 + usize::from(b[i] == b'\\');
                }
            }
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'[' || c == b'{' {
            // A string, a range or an unnamed selector.
            i = skip_to(i + 1, if c == b'"' { b'"' } else { c + 2 }) + 1;
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (name_char(b[i]) || b[i] == b'.') {
                i += 1;
            }
        } else if name_char(c) {
            let start = i;
            while i < b.len() && name_char(b[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            let next = i + expr[i..].len() - expr[i..].trim_start().len();
            if GROUPING.contains(&name) && b.get(next) == Some(&b'(') {
                i = skip_to(next, b')') + 1;
            } else if b.get(next) == Some(&b'{') {
                i = skip_to(next, b'}') + 1;
                out.push(expr[start..i].to_string());
            } else if b.get(next) != Some(&b'(') && !KEYWORDS.contains(&name) {
                out.push(name.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn selectors_are_read_from_promql() {
    assert_eq!(
        selectors(
            r#"sum without (rcode) (rate(a_total{rcode="SERVFAIL", x=~"}{"}[5m])) / on (job) b offset 10m > 0.5 or c:d"#
        ),
        ["a_total{rcode=\"SERVFAIL\", x=~\"}{\"}", "b", "c:d"]
    );
    assert_eq!(
        selectors("histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m]))) and up{job=\"g\"} == bool 1"),
        ["h_bucket", "up{job=\"g\"}"]
    );
}

fn promtool(args: &[&str]) -> String {
    require("promtool");
    let out = Command::new("promtool").args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn rules_pass_promtool_and_their_unit_tests_and_ship_for_the_operator() {
    let dir = monitoring_dir();
    let text = promtool(&["check", "rules", dir.join("rules.yaml").to_str().unwrap()]);
    assert!(text.contains("SUCCESS"), "{text}");
    let tests = dir.join("tests/rules-test.yaml");
    let text = promtool(&["test", "rules", tests.to_str().unwrap()]);
    assert!(text.contains("SUCCESS"), "{text}");

    // Each alert is tested firing and quiet.
    let rules = rules();
    let unit_tests = yaml(&tests);
    let cases: Vec<&Value> = unit_tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .collect();
    let alerts: Vec<&str> = each_rule(&rules).filter_map(|r| r["alert"].as_str()).collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in &alerts {
        let of_it = || cases.iter().filter(|c| c["alertname"] == *alert);
        assert!(
            of_it().any(|c| !c["exp_alerts"].as_array().unwrap().is_empty()),
            "{alert} is never tested firing"
        );
        assert!(
            of_it().any(|c| c["exp_alerts"].as_array().unwrap().is_empty()),
            "{alert} is never tested quiet"
        );
    }

    // For prometheus-operator: the same rules, a PodMonitor for the pods of deploy/, the
    // dashboard for Grafana's sidecar.
    let rendered = kustomize(&dir);
    let objects = objects(&rendered);
    let of_kind = |kind: &str| objects.iter().find(|o| o["kind"] == kind).unwrap();
    assert_eq!(objects.len(), 3, "{rendered}");
    assert_eq!(of_kind("PrometheusRule")["spec"], rules);
    let dashboard = of_kind("ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(dashboard["data"]["globaldns.json"].as_str().unwrap()).unwrap();
    assert_eq!(json, self::dashboard());
    let base = crate::deploy::objects(&kustomize(&deploy_dir()));
    let pod = &base.iter().find(|o| o["kind"] == "Deployment").unwrap()["spec"]["template"];
    let monitor = &of_kind("PodMonitor")["spec"];
    // Every pod of deploy/ and of its transfer component: the selector's labels are theirs.
    let transfer = yaml(&deploy_dir().join("components/transfer/deployment.yaml"));
    for pod in [pod, &transfer["spec"]["template"]] {
        let labels = &pod["metadata"]["labels"];
        for (k, v) in monitor["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{k} of {labels}");
        }
        let job_label = monitor["jobLabel"].as_str().unwrap();
        assert_eq!(labels[job_label], "globaldns", "job=\"globaldns\"");
    }
    let port = monitor["podMetricsEndpoints"][0]["port"].as_str().unwrap();
    assert!(
        pod["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port),
        "{port}"
    );
    for obj in &objects {
        assert_eq!(obj["metadata"]["namespace"], "istio-system");
    }
    // Only the ConfigMap has a schema kubernetes-validate knows; promtool checked the rules.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &rendered).unwrap();
    validate(&[file.path().to_owned()], 1);
}

fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus of Debian's package, on loopback, killed when dropped.
struct Prometheus {
    addr: SocketAddr,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What Kubernetes discovery would give Prometheus for a pod's port: its meta labels.
fn pod_target(admin: SocketAddr, pod: &str, port_name: &str) -> Value {
    // The transfer primary's pods have an `app` of their own and are scraped all the same.
    let app = if pod.contains("transfer") {
        "globaldns-transfer"
    } else {
        "globaldns"
    };
    json!({"targets": [admin.to_string()], "labels": {
        "__meta_kubernetes_namespace": "istio-system",
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_label_app": app,
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "globaldns",
        "__meta_kubernetes_pod_container_port_name": port_name,
    }})
}

impl Prometheus {
    /// Scrapes `targets` (file_sd target groups) every second with deploy/monitoring's job, its
    /// Kubernetes discovery swapped for that file, and evaluates the shipped rules every second,
    /// each `for:` shortened to 1 s.
    async fn start(targets: Value) -> Prometheus {
        require("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let mut rules = rules();
        for group in rules["groups"].as_array_mut().unwrap() {
            for rule in group["rules"].as_array_mut().unwrap() {
                if rule.get("for").is_some() {
                    rule["for"] = json!("1s");
                }
            }
        }
        std::fs::write(dir.path().join("rules.json"), rules.to_string()).unwrap();
        std::fs::write(dir.path().join("targets.json"), targets.to_string()).unwrap();
        let mut jobs = yaml(&monitoring_dir().join("scrape-config.yaml"));
        let job = &mut jobs[0];
        assert!(job["kubernetes_sd_configs"].is_array(), "{job}");
        job.as_object_mut().unwrap().remove("kubernetes_sd_configs");
        job["file_sd_configs"] = json!([{"files": [dir.path().join("targets.json")]}]);
        job["scrape_interval"] = json!("1s");
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [dir.path().join("rules.json")],
            "scrape_configs": jobs,
        });
        std::fs::write(dir.path().join("prometheus.json"), config.to_string()).unwrap();
        let log = dir.path().join("prometheus.log");
        for _ in 0..3 {
            // A free port, as near as one can tell: another may take it before Prometheus does.
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let mut child = Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.json").display()
                ))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let mut ready = false;
            while !ready && child.try_wait().unwrap().is_none() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                ready = get(addr, "/-/ready").await.0 == 200;
            }
            if ready {
                return Prometheus { addr, child, _dir: dir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("prometheus did not start: {}", std::fs::read_to_string(&log).unwrap());
    }

    /// `GET /api/v1/<path>`: its `data`; fails on an error.
    async fn api(&self, path: &str) -> Value {
        let (status, body) = get(self.addr, &format!("/api/v1/{path}")).await;
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {status} {body}"));
        assert_eq!(v["status"], "success", "{path}: {v}");
        v["data"].clone()
    }

    /// The instant vector of `expr` now.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api(&format!("query?query={}", percent_encoded(expr))).await;
        data["result"].as_array().unwrap().clone()
    }

    /// The firing alerts named `name`, their labels.
    async fn firing(&self, name: &str) -> Vec<Value> {
        let data = self.api("alerts").await;
        data["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .map(|a| a["labels"].clone())
            .collect()
    }

    /// Waits until `name` fires for exactly the pods `pods`.
    async fn until_firing(&self, name: &str, pods: &[&str]) {
        let pods_firing = || async {
            let mut firing: Vec<String> = self
                .firing(name)
                .await
                .iter()
                .map(|l| l["pod"].as_str().unwrap().to_string())
                .collect();
            firing.sort();
            firing
        };
        let fired = eventually(Duration::from_secs(30), || async { pods_firing().await == pods }).await;
        assert!(
            fired,
            "{name}: wanted firing for {pods:?}, got {:?}",
            self.firing(name).await
        );
    }
}

/// The series of `upstream`'s state (1 up, 0 down) in globaldns's /metrics.
fn upstream_up(upstream: SocketAddr) -> String {
    format!("globaldns_forward_upstream_up{{upstream=\"{upstream}\"}}")
}

/// Forwards a name through `server` until it has marked `upstream` down (within 10 s); the
/// rcodes of the answers meanwhile.
async fn forward_until_down(server: &Server, upstream: SocketAddr) -> Vec<ResponseCode> {
    let client = udp_client(server.addr).await;
    let rcodes = std::sync::Mutex::new(Vec::new());
    let down = eventually(Duration::from_secs(10), || async {
        let answer = ask(&mut client.clone(), "example.com.", RecordType::A).await;
        rcodes.lock().unwrap().push(answer.metadata.response_code);
        metric(&get(server.admin_addr(), "/metrics").await.1, &upstream_up(upstream)) == 0.0
    })
    .await;
    assert!(down, "{upstream} not marked down");
    rcodes.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_globaldns_finds_every_selector_and_fires_its_alerts() {
    // a: entry files (one rejected), forwarding to two upstreams; b: a local cluster that
    // never answers; c: ready without a remote cluster past --sync-timeout.
    let ups = [
        Upstream::start(Behaviour::Answer).await,
        Upstream::start(Behaviour::Answer).await,
    ];
    let entries = [
        std::fs::read_to_string(examples_dir().join("httpbin-bar-global.yaml")).unwrap(),
        se("bar", "bad", "{hosts: [\"*\"], addresses: [1.1.1.1]}"),
    ]
    .concat();
    let a = Server::start_forwarding(&[("se.yaml", &entries)], Some(forwarding(&[ups[0].addr, ups[1].addr]))).await;
    let mut client = udp_client(a.addr).await;
    for name in ["httpbin.bar.global.", "nope.global.", "example.com."] {
        ask(&mut client, name, RecordType::A).await;
    }
    let unreachable = KubeApi::start(&["v1"]).await;
    unreachable.set_down(true);
    let b = Mesh::start(&[(&unreachable, "unreachable")], None, Duration::from_secs(10)).await;
    let west = KubeApi::start(&["v1"]).await;
    let c = Mesh::start(&[(&west, "west"), (&unreachable, "east")], None, Duration::from_secs(1)).await;
    let prometheus = Prometheus::start(json!([
        pod_target(a.admin_addr(), "globaldns-a", "http-admin"),
        pod_target(b.running.admin_addr().unwrap(), "globaldns-b", "http-admin"),
        pod_target(c.running.admin_addr().unwrap(), "globaldns-transfer-c", "http-admin"),
        // The DNS port of a pod: the job's relabelling drops it.
        pod_target(a.addr, "globaldns-a", "dns-tcp"),
    ]))
    .await;

    let both_up = eventually(Duration::from_secs(30), || async {
        prometheus.query("up{job=\"globaldns\"} == 1").await.len() == 3
    })
    .await;
    assert!(both_up, "{:?}", prometheus.api("targets").await);
    let targets = prometheus.api("targets").await;
    assert_eq!(targets["activeTargets"].as_array().unwrap().len(), 3, "{targets}");
    let series = prometheus.query("globaldns_table_hosts").await;
    let mut pods: Vec<(&str, &str)> = series
        .iter()
        .map(|s| {
            (
                s["metric"]["namespace"].as_str().unwrap(),
                s["metric"]["pod"].as_str().unwrap(),
            )
        })
        .collect();
    pods.sort();
    assert_eq!(
        pods,
        [
            ("istio-system", "globaldns-a"),
            ("istio-system", "globaldns-b"),
            ("istio-system", "globaldns-transfer-c")
        ]
    );

    // Every selector of the rules and the dashboard matches series: a name globaldns does not
    // export (or a recording rule does not record) fails here.
    let rules = rules();
    let recorded: Vec<&str> = each_rule(&rules).filter_map(|r| r["record"].as_str()).collect();
    let dashboard = dashboard();
    let mut exprs: Vec<String> = each_rule(&rules)
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    exprs.extend(dashboard_exprs(&dashboard));
    let mut wanted: Vec<String> = exprs.iter().flat_map(|e| selectors(e)).collect();
    wanted.extend(dashboard_variable_selectors(&dashboard));
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() >= 15, "{wanted:?}");
    for s in &wanted {
        let name = s.split('{').next().unwrap();
        assert!(
            name.starts_with("globaldns_") || recorded.contains(&name) || name == "up",
            "{s}: not a series of globaldns"
        );
    }
    let missing = || async {
        let mut missing = Vec::new();
        for s in &wanted {
            if prometheus.query(&format!("count({s})")).await.is_empty() {
                missing.push(s.clone());
            }
        }
        missing
    };
    let all_found = eventually(Duration::from_secs(30), || async { missing().await.is_empty() }).await;
    assert!(all_found, "no series for {:?}", missing().await);
    // Every dashboard expression evaluates (an error fails `api`).
    for e in dashboard_exprs(&dashboard) {
        prometheus.query(&e).await;
    }
    let healthy = eventually(Duration::from_secs(10), || async {
        let groups = prometheus.api("rules").await;
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .all(|r| r["health"] == "ok")
    })
    .await;
    assert!(healthy, "{}", prometheus.api("rules").await);

    // b cannot sync its local cluster: not ready. c has not synced a remote cluster, but is
    // past --sync-timeout and ready: that cluster is named, and c is not "not ready".
    prometheus.until_firing("GlobalDNSNotReady", &["globaldns-b"]).await;
    prometheus
        .until_firing("GlobalDNSClusterNotSynced", &["globaldns-b", "globaldns-transfer-c"])
        .await;
    let mut not_synced: Vec<(String, String)> = prometheus
        .firing("GlobalDNSClusterNotSynced")
        .await
        .iter()
        .map(|l| (l["pod"].as_str().unwrap().into(), l["cluster"].as_str().unwrap().into()))
        .collect();
    not_synced.sort();
    assert_eq!(
        not_synced,
        [
            ("globaldns-b".to_string(), "unreachable".to_string()),
            ("globaldns-transfer-c".to_string(), "east".to_string())
        ]
    );
    assert!(prometheus.firing("GlobalDNSUpstreamDown").await.is_empty());
    assert!(prometheus.firing("GlobalDNSDown").await.is_empty());

    // The first upstream of a is killed: forwards fail there (and go to the second) until a
    // marks it down, and the alert names it; the second answers, so only it is down.
    let (_, text) = get(a.admin_addr(), "/metrics").await;
    for up in &ups {
        assert!(text.contains(&format!("{} 1\n", upstream_up(up.addr))), "{text}");
    }
    ups[0].kill();
    let rcodes = forward_until_down(&a, ups[0].addr).await;
    assert!(rcodes.iter().all(|r| *r == ResponseCode::NoError), "{rcodes:?}");
    prometheus.until_firing("GlobalDNSUpstreamDown", &["globaldns-a"]).await;
    assert_eq!(
        prometheus.firing("GlobalDNSUpstreamDown").await[0]["upstream"],
        ups[0].addr.to_string()
    );
    assert!(prometheus.firing("GlobalDNSAllUpstreamsDown").await.is_empty());

    // The second too: every forward fails, at once.
    ups[1].kill();
    forward_until_down(&a, ups[1].addr).await;
    prometheus
        .until_firing("GlobalDNSAllUpstreamsDown", &["globaldns-a"])
        .await;
    prometheus
        .until_firing("GlobalDNSUpstreamDown", &["globaldns-a", "globaldns-a"])
        .await;

    // b stops: down.
    b.stop().await;
    prometheus.until_firing("GlobalDNSDown", &["globaldns-b"]).await;
    c.stop().await;
    a.stop().await;
}
