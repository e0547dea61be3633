//! ServiceEntries from several clusters, through the real `kube` client against emulated API
//! servers: precedence and conflicts, live changes, CRD version fallback, SERVFAIL and
//! readiness before sync, outages, dropped watches, 410 Gone, remote secrets.

use std::time::Duration;

use std::sync::Arc;

use globaldns::app::{self, Running, Sources};
use globaldns::metrics::Metrics;
use globaldns::source::{Event, Update};
use globaldns::sources::remote_secrets;
use globaldns::table::TableSettings;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, loopback};
use crate::kubeapi::{KubeApi, write_kubeconfig};
use crate::support::*;

pub(crate) struct Mesh {
    pub(crate) running: Running,
    client: DnsClient,
    _dir: TempDir,
}

impl Mesh {
    /// Serves the clusters `(api, context)`, the first the local one (a kubeconfig of their
    /// contexts, as [`write_kubeconfig`] writes it).
    pub(crate) async fn start(
        clusters: &[(&KubeApi, &str)],
        remote_secrets: Option<&str>,
        sync_timeout: Duration,
    ) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            remote_secrets: remote_secrets.map(str::to_owned),
            sync_timeout,
            ..config::clusters(dir.path(), clusters)
        };
        let running = app::start(loopback(sources)).await.expect("starts");
        let client = udp_client(running.dns_addr()).await;
        Mesh {
            running,
            client,
            _dir: dir,
        }
    }

    pub(crate) async fn a(&self, name: &str) -> (ResponseCode, Vec<String>) {
        let m = ask(&mut self.client.clone(), name, RecordType::A).await;
        (m.metadata.response_code, addresses(&m))
    }

    /// Waits until `name` answers exactly `want` (addresses; empty: NXDOMAIN).
    pub(crate) async fn until(&self, name: &str, want: &[&str]) {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        let ok = eventually(Duration::from_secs(15), || async {
            let (rcode, got) = self.a(name).await;
            got == want && (rcode == ResponseCode::NXDomain) == want.is_empty()
        })
        .await;
        assert!(ok, "{name}: wanted {want:?}, got {:?}", self.a(name).await);
    }

    fn stale(&self, name: &str) -> bool {
        self.running.status().is_stale(name)
    }

    pub(crate) async fn stop(self) {
        self.running.shutdown_token().cancel();
        tokio::time::timeout(Duration::from_secs(5), self.running.wait())
            .await
            .expect("stops");
    }
}

fn spec(host: &str, addresses: &[&str]) -> serde_json::Value {
    json!({"hosts": [host], "addresses": addresses, "resolution": "STATIC"})
}

/// The remote-secret watcher of `istio-system` in `local` (named `local`), sending to `updates`.
async fn watch_remote_secrets(
    local: &KubeApi,
    updates: mpsc::Sender<Update>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let client = remote_secrets::client_from_kubeconfig(local.kubeconfig("local", "t").as_bytes())
        .await
        .unwrap();
    tokio::spawn(remote_secrets::watch(
        client,
        "local".into(),
        "istio-system".into(),
        updates,
        metrics,
        shutdown,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clusters_precedence_conflicts_and_live_changes() {
    let (c1, c2, c3) = (
        KubeApi::start(&["v1", "v1beta1"]).await,
        KubeApi::start(&["v1beta1"]).await,
        KubeApi::start(&["v1alpha3"]).await,
    );
    c1.apply_se("bar", "shared", spec("shared.global", &["240.0.0.1"]), None);
    c2.apply_se("bar", "shared", spec("shared.global", &["240.0.0.2"]), None);
    c2.apply_se("bar", "two", spec("two.global", &["240.0.0.20"]), None);
    c3.apply_se("baz", "three", spec("three.global", &["240.0.0.30"]), None);
    c3.apply_se("baz", "bad", json!({"hosts": ["*"], "addresses": ["1.1.1.1"]}), None);
    // Enough objects to need several pages.
    for i in 0..30 {
        c3.apply_se(
            "bulk",
            &format!("s{i}"),
            spec(&format!("s{i}.bulk.global"), &[&format!("240.1.0.{i}")]),
            None,
        );
    }
    let mesh = Mesh::start(&[(&c1, "c1"), (&c2, "c2"), (&c3, "c3")], None, Duration::from_secs(10)).await;
    mesh.until("three.global.", &["240.0.0.30"]).await;
    mesh.until("s29.bulk.global.", &["240.1.0.29"]).await;
    assert_eq!(
        mesh.a("shared.global.").await.1,
        ["240.0.0.1"],
        "the local cluster wins"
    );
    assert_eq!(mesh.a("two.global.").await.1, ["240.0.0.20"]);
    let table = mesh.running.table();
    assert_eq!(table.conflicts().len(), 1);
    assert_eq!(
        (&*table.conflicts()[0].winner, &*table.conflicts()[0].loser),
        ("c1", "c2")
    );
    assert!(mesh.running.ready());
    assert!(
        c3.requests()
            .iter()
            .any(|r| r.starts_with("/apis/networking.istio.io/v1alpha3/serviceentries")),
        "v1alpha3-only cluster"
    );
    assert!(
        c2.requests()
            .iter()
            .any(|r| r.starts_with("/apis/networking.istio.io/v1beta1/serviceentries"))
    );

    // Add, update and delete in each cluster.
    c1.apply_se("bar", "new", spec("new.global", &["240.0.0.5"]), None);
    mesh.until("new.global.", &["240.0.0.5"]).await;
    c2.apply_se("bar", "two", spec("two.global", &["240.0.0.21", "240.0.0.22"]), None);
    mesh.until("two.global.", &["240.0.0.21", "240.0.0.22"]).await;
    c3.delete_se("baz", "three");
    mesh.until("three.global.", &[]).await;
    c1.delete_se("bar", "shared");
    mesh.until("shared.global.", &["240.0.0.2"]).await;
    assert!(mesh.running.table().conflicts().is_empty());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_once_the_table_holds_every_cluster() {
    // Enough entries that building the table takes a while: readiness must wait for it, not
    // for the lists alone (the pod would otherwise take queries it answers NXDOMAIN).
    let (local, remote) = (KubeApi::start(&["v1"]).await, KubeApi::start(&["v1"]).await);
    for (api, cluster) in [(&local, "l"), (&remote, "r")] {
        for i in 0..3000 {
            let host = format!("s{i}.{cluster}.global");
            api.apply_se(cluster, &format!("s{i}"), spec(&host, &["240.0.0.1"]), None);
        }
    }
    let mesh = Mesh::start(&[(&local, "local"), (&remote, "remote")], None, Duration::from_secs(30)).await;
    let became_ready = eventually(Duration::from_secs(30), || async { mesh.running.ready() }).await;
    assert!(became_ready, "ready");
    let table = mesh.running.table();
    assert_eq!(
        table.host_count(),
        6000,
        "every entry of both clusters is served once ready"
    );
    let status = mesh.running.status();
    let sources = status.sources();
    assert!(sources.iter().all(|s| s.synced && s.entries == 3000), "{sources:?}");
    assert_eq!(mesh.a("s2999.r.global.").await.1, ["240.0.0.1"]);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_and_not_ready_before_the_local_cluster_syncs() {
    let local = KubeApi::start(&["v1"]).await;
    local.apply_se("bar", "httpbin", spec("httpbin.bar.global", &["240.0.0.2"]), None);
    local.set_down(true);
    let mesh = Mesh::start(&[(&local, "local")], None, Duration::from_secs(10)).await;
    for name in ["httpbin.bar.global.", "nope.global."] {
        assert_eq!(
            mesh.a(name).await.0,
            ResponseCode::ServFail,
            "{name}: never NXDOMAIN before sync"
        );
    }
    assert!(!mesh.running.ready());
    local.set_down(false);
    mesh.until("httpbin.bar.global.", &["240.0.0.2"]).await;
    assert_eq!(mesh.a("nope.global.").await.0, ResponseCode::NXDomain);
    assert!(mesh.running.ready());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_cluster_that_never_syncs_stops_holding_readiness() {
    let local = KubeApi::start(&["v1"]).await;
    let remote = KubeApi::start(&["v1"]).await;
    remote.set_down(true);
    let mesh = Mesh::start(
        &[(&local, "local"), (&remote, "remote")],
        None,
        Duration::from_millis(800),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async { mesh.running.ready() }).await,
        "ready once the remote's sync timeout passed"
    );
    let status = mesh.running.status();
    let remote_state = status.sources().iter().find(|s| &*s.name == "remote").unwrap();
    assert!(!remote_state.synced && remote_state.gave_up_waiting && remote_state.error.is_some());
    remote.apply_se("r", "late", spec("late.global", &["240.0.0.9"]), None);
    remote.set_down(false);
    mesh.until("late.global.", &["240.0.0.9"]).await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_serve_the_last_known_entries_then_converge() {
    let local = KubeApi::start(&["v1"]).await;
    let other = KubeApi::start(&["v1"]).await;
    local.apply_se("a", "keep", spec("keep.global", &["240.0.0.1"]), None);
    other.apply_se("b", "old", spec("old.global", &["240.0.0.2"]), None);
    let mesh = Mesh::start(&[(&local, "local"), (&other, "other")], None, Duration::from_secs(10)).await;
    mesh.until("old.global.", &["240.0.0.2"]).await;

    // The other cluster goes away; writes happen meanwhile and history is compacted, so the
    // watch cannot resume (410 Gone) and must relist.
    other.set_down(true);
    assert!(
        eventually(Duration::from_secs(10), || async { mesh.stale("other") }).await,
        "reported stale"
    );
    other.delete_se("b", "old");
    other.apply_se("b", "new", spec("new.global", &["240.0.0.3"]), None);
    other.compact();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        mesh.a("old.global.").await,
        (ResponseCode::NoError, vec!["240.0.0.2".into()]),
        "no NXDOMAIN for a name that existed"
    );
    assert_eq!(mesh.a("new.global.").await.0, ResponseCode::NXDomain);

    other.set_down(false);
    mesh.until("new.global.", &["240.0.0.3"]).await;
    mesh.until("old.global.", &[]).await;
    assert!(!mesh.stale("other"));
    assert_eq!(mesh.a("keep.global.").await.1, ["240.0.0.1"]);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_resume_and_410_relists() {
    let local = KubeApi::start(&["v1"]).await;
    local.apply_se("a", "one", spec("one.global", &["240.0.0.1"]), None);
    let mesh = Mesh::start(&[(&local, "local")], None, Duration::from_secs(10)).await;
    mesh.until("one.global.", &["240.0.0.1"]).await;
    for round in 0..3 {
        local.drop_connections();
        local.apply_se("a", "one", spec("one.global", &[&format!("240.0.1.{round}")]), None);
        mesh.until("one.global.", &[&format!("240.0.1.{round}")]).await;
    }
    // Writes the client missed, then history compacted: its resume gets 410 Gone and relists.
    // (The cut of open connections is asynchronous: let it land, and write twice, so the
    // compaction point is past anything a connection being cut could still deliver.)
    local.set_down(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    local.apply_se("a", "two", spec("two.global", &["240.0.0.2"]), None);
    local.apply_se("a", "three", spec("three.global", &["240.0.0.3"]), None);
    local.compact();
    local.set_down(false);
    mesh.until("two.global.", &["240.0.0.2"]).await;
    mesh.until("three.global.", &["240.0.0.3"]).await;
    let lists = local
        .requests()
        .iter()
        .filter(|r| r.contains("serviceentries") && !r.contains("watch=true"))
        .count();
    assert!(
        lists >= 2,
        "relisted after 410 ({lists} lists): {:#?}",
        local.requests()
    );
    mesh.stop().await;
}

/// A CRD version that stops being served (the watched version answers 404): discovery runs
/// again, the watch moves to the version served now and lists it; the entries stay served
/// meanwhile, and the failure is counted by its kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_stops_being_served_is_discovered_again() {
    let local = KubeApi::start(&["v1beta1"]).await;
    local.apply_se("a", "one", spec("one.global", &["240.0.0.1"]), None);
    let mesh = Mesh::start(&[(&local, "local")], None, Duration::from_secs(10)).await;
    mesh.until("one.global.", &["240.0.0.1"]).await;

    // An Istio upgrade: v1 served, v1beta1 no longer.
    local.set_versions(&["v1"]);
    local.apply_se("a", "two", spec("two.global", &["240.0.0.2"]), None);
    mesh.until("two.global.", &["240.0.0.2"]).await;
    assert_eq!(mesh.a("one.global.").await.1, ["240.0.0.1"]);
    // (The cut of the open watch is asynchronous: "two" may still arrive over the v1beta1 watch
    // before it ends, so the move to v1 is waited for, not expected at once.)
    let at_v1 = eventually(Duration::from_secs(5), || async {
        (local.requests().iter()).any(|r| r.starts_with("/apis/networking.istio.io/v1/serviceentries"))
    })
    .await;
    assert!(at_v1, "watching v1: {:#?}", local.requests());
    assert!(
        eventually(Duration::from_secs(5), || async { !mesh.stale("local") }).await,
        "not stale once listed at v1"
    );
    let admin = mesh.running.admin_addr().unwrap();
    let (_, text) = get(admin, "/metrics").await;
    let series = "globaldns_source_errors_total{cluster=\"local\",error=\"not_found\"}";
    assert!(metric(&text, series) >= 1.0, "{series}: {text}");
    mesh.stop().await;
}

/// Shutting the remote-secret watcher down stops the cluster watchers it started, and it
/// returns only once they have returned: here one is waiting to send into a full channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_cluster_watchers_are_stopped_and_awaited_on_shutdown() {
    let (local, remote) = (KubeApi::start(&["v1"]).await, KubeApi::start(&["v1"]).await);
    remote.apply_se("b", "svc", spec("svc.global", &["240.0.1.1"]), None);
    let label = json!({"istio/multiCluster": "true"});
    let kubeconfig = remote.kubeconfig("east", "t");
    local.apply_secret("istio-system", "east", label, &[("east", &kubeconfig)]);
    let (updates, mut received) = mpsc::channel::<Update>(1);
    let shutdown = CancellationToken::new();
    let watching = watch_remote_secrets(&local, updates, Arc::new(Metrics::new()), shutdown.clone()).await;
    let listed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(u) = received.recv().await {
            if matches!(u.event, Event::Listed(_)) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(listed, Ok(true), "the remote cluster is watched and listed");

    // Two changes: the first fills the channel, the watcher waits to send the second.
    remote.apply_se("b", "one", spec("one.global", &["240.0.1.2"]), None);
    remote.apply_se("b", "two", spec("two.global", &["240.0.1.3"]), None);
    assert!(eventually(Duration::from_secs(10), || std::future::ready(received.len() == 1)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), watching)
        .await
        .expect("returns on shutdown")
        .unwrap();
    assert!(
        received.is_closed(),
        "every cluster watcher has returned (and dropped its sender) by then"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_secrets_add_replace_and_remove_clusters() {
    let local = KubeApi::start(&["v1"]).await;
    let (r1, r2) = (KubeApi::start(&["v1"]).await, KubeApi::start(&["v1beta1"]).await);
    local.apply_se("a", "local", spec("local.global", &["240.0.0.1"]), None);
    r1.apply_se("b", "svc", spec("svc.global", &["240.0.1.1"]), None);
    r2.apply_se("b", "svc", spec("svc.global", &["240.0.2.1"]), None);
    let label = json!({"istio/multiCluster": "true"});
    local.apply_secret(
        "istio-system",
        "istio-remote-secret-east",
        label.clone(),
        &[("east", &r1.kubeconfig("east", "token-east-do-not-log"))],
    );
    // A key naming the local cluster is ignored; a secret without the label is not read.
    local.apply_secret(
        "istio-system",
        "istio-remote-secret-self",
        label.clone(),
        &[("local", &local.kubeconfig("local", "t"))],
    );
    local.apply_secret(
        "istio-system",
        "unlabelled",
        json!({}),
        &[("west", &r2.kubeconfig("west", "t"))],
    );
    let mesh = Mesh::start(&[(&local, "local")], Some("istio-system"), Duration::from_secs(10)).await;
    mesh.until("svc.global.", &["240.0.1.1"]).await;
    assert_eq!(mesh.a("local.global.").await.1, ["240.0.0.1"]);
    let names: Vec<String> = mesh
        .running
        .status()
        .sources()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, ["local", "east"], "sources: {names:?}");

    // Replaced: the same cluster ID now points at another API server.
    local.apply_secret(
        "istio-system",
        "istio-remote-secret-east",
        label.clone(),
        &[("east", &r2.kubeconfig("east", "token-east-2"))],
    );
    mesh.until("svc.global.", &["240.0.2.1"]).await;
    // Removed: its entries go.
    local.delete_secret("istio-system", "istio-remote-secret-east");
    mesh.until("svc.global.", &[]).await;
    assert_eq!(mesh.running.status().sources().len(), 1);
    // The same cluster ID added back later: served again.
    local.apply_secret(
        "istio-system",
        "istio-remote-secret-east-again",
        label.clone(),
        &[("east", &r1.kubeconfig("east", "token-east-3"))],
    );
    mesh.until("svc.global.", &["240.0.1.1"]).await;
    assert!(
        mesh.running
            .status()
            .sources()
            .iter()
            .any(|s| &*s.name == "east" && s.synced)
    );
    mesh.stop().await;
}

/// `globaldns records` prints the merged table of live clusters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_prints_the_merged_table_of_live_clusters() {
    let (c1, c2) = (KubeApi::start(&["v1"]).await, KubeApi::start(&["v1"]).await);
    c1.apply_se("bar", "one", spec("one.global", &["240.0.0.1"]), None);
    c2.apply_se(
        "baz",
        "two",
        json!({"hosts": ["two.global"], "resolution": "DNS"}),
        Some(json!({"addresses": [{"host": "two.global", "value": "240.240.0.7"}]})),
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), &[(&c1, "c1"), (&c2, "c2")]);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_globaldns"))
        .args([
            "records",
            "--format",
            "json",
            "--context",
            "c1",
            "--context",
            "c2",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts: Vec<(String, String, String)> = json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().into(),
                h["source"].as_str().unwrap().into(),
                h["a"][0].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        [
            ("one.global".into(), "c1".into(), "240.0.0.1".into()),
            ("two.global".into(), "c2".into(), "240.240.0.7".into())
        ]
    );
    assert_eq!(json["synced"], true);
}

/// Kubeconfigs and tokens never reach the logs, even at debug level and with broken secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_the_logs() {
    let (local, remote) = (KubeApi::start(&["v1"]).await, KubeApi::start(&["v1"]).await);
    remote.apply_se("b", "svc", spec("svc.global", &["240.0.1.1"]), None);
    let label = json!({"istio/multiCluster": "true"});
    local.apply_secret(
        "istio-system",
        "good",
        label.clone(),
        &[("east", &remote.kubeconfig("east", "token-east-do-not-log"))],
    );
    let broken =
        "apiVersion: v1\nkind: Config\nusers:\n- name: x\n  user:\n    token: token-broken-do-not-log\n    bogus: [\n";
    local.apply_secret("istio-system", "broken", label, &[("west", broken)]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), &[(&local, "local")]);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_globaldns"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--context",
            "local",
            "--remote-secrets",
            "istio-system",
        ])
        .args(["--upstream", "127.0.0.1:9", "--kubeconfig"])
        .arg(&kubeconfig)
        .env("RUST_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let mut stderr = stderr;
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    // Wait until the remote cluster is watched, then stop the server.
    let seen = eventually(Duration::from_secs(15), || async {
        remote.requests().iter().any(|r| r.contains("watch=true"))
    })
    .await;
    assert!(seen, "the remote cluster from the secret is watched");
    tokio::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let logs = logs.await.unwrap();
    assert!(
        logs.contains("remote secret key is not a kubeconfig") || logs.contains("is not a usable kubeconfig"),
        "the broken secret is reported: {logs}"
    );
    for secret in [
        "token-east-do-not-log",
        "token-local-do-not-log",
        "token-broken-do-not-log",
        "bogus",
    ] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_answering_500s_keeps_the_last_known_entries() {
    let local = KubeApi::start(&["v1"]).await;
    local.apply_se("a", "one", spec("one.global", &["240.0.1.1"]), None);
    let mesh = Mesh::start(&[(&local, "local")], None, Duration::from_secs(10)).await;
    mesh.until("one.global.", &["240.0.1.1"]).await;
    local.set_failing(true);
    local.apply_se("a", "one", spec("one.global", &["240.0.2.1"]), None);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        mesh.a("one.global.").await.1,
        ["240.0.1.1"],
        "last known entries while failing"
    );
    local.set_failing(false);
    mesh.until("one.global.", &["240.0.2.1"]).await;
    mesh.stop().await;
}

/// Whether `/debug/sources` and `globaldns_source_stale` say `cluster` is stale.
async fn shown_stale(admin: std::net::SocketAddr, cluster: &str) -> (bool, bool) {
    let (_, body) = get(admin, "/debug/sources").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let debug = json["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == cluster)
        .is_some_and(|s| s["stale"] == true);
    let (_, metrics) = get(admin, "/metrics").await;
    let metric = metric(&metrics, &format!("globaldns_source_stale{{cluster=\"{cluster}\"}}")) == 1.0;
    (debug, metric)
}

/// A watch that fails (its connection cut, the API answering errors for a while) and then
/// resumes from its resource version without a relist: kube's watcher tells nothing then, and
/// no object changes, yet the cluster is no longer stale within 10 s of the API answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_clears_when_a_failed_watch_resumes_without_any_change() {
    let local = KubeApi::start(&["v1"]).await;
    local.apply_se("a", "one", spec("one.global", &["240.0.1.1"]), None);
    let mesh = Mesh::start(&[(&local, "local")], None, Duration::from_secs(10)).await;
    let admin = mesh.running.admin_addr().unwrap();
    mesh.until("one.global.", &["240.0.1.1"]).await;
    assert_eq!(shown_stale(admin, "local").await, (false, false));

    local.set_failing(true);
    let failed = eventually(Duration::from_secs(10), || async {
        shown_stale(admin, "local").await == (true, true)
    })
    .await;
    assert!(failed, "stale in /debug/sources and the metric while the API fails");
    // Long enough for the watcher to have retried (and failed) more than once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests_before = local.requests().len();
    local.set_failing(false);
    let answering = std::time::Instant::now();
    let cleared = eventually(Duration::from_secs(10), || async {
        shown_stale(admin, "local").await == (false, false)
    })
    .await;
    let took = answering.elapsed();
    assert!(
        cleared,
        "stale cleared within 10 s of the API answering again: {:?}",
        shown_stale(admin, "local").await
    );
    assert!(took <= Duration::from_secs(10), "cleared after {took:?}");
    eprintln!("stale cleared {took:?} after the API answered again");
    assert_eq!(mesh.a("one.global.").await.1, ["240.0.1.1"], "nothing changed");
    // Resumed, not relisted: after the failure only watches and probes (lists of one).
    let since = local.requests()[requests_before..].to_vec();
    assert!(
        since.iter().all(|r| r.contains("watch=true") || r.ends_with("limit=1")),
        "no relist: {since:#?}"
    );
    mesh.stop().await;
}

/// A removed remote cluster's watcher delivers after the registry has processed the removal
/// (made certain here: a relay between the sources and the registry holds the watcher's
/// list back until the removal has passed). The removed cluster is not brought back; the
/// same cluster ID added back later is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_update_of_a_removed_remote_cluster_is_dropped() {
    use globaldns::registry::Registry;
    use globaldns::source::{SourceId, SourceKey};
    use tokio::sync::watch;

    let (local, remote) = (KubeApi::start(&["v1"]).await, KubeApi::start(&["v1"]).await);
    remote.apply_se("b", "svc", spec("svc.global", &["240.0.1.1"]), None);
    let label = json!({"istio/multiCluster": "true"});
    let secret = [("east", remote.kubeconfig("east", "t"))];
    let secret: Vec<(&str, &str)> = secret.iter().map(|(k, v)| (*k, v.as_str())).collect();
    local.apply_secret("istio-system", "east", label.clone(), &secret);

    let metrics = Arc::new(Metrics::new());
    let settings = TableSettings::new(&["global"]).unwrap();
    let registry = Registry::new(settings, None, Duration::from_secs(10), metrics.clone());
    let (table, status) = (registry.table(), registry.status());
    let shutdown = CancellationToken::new();
    let (to_registry, from_relay) = mpsc::channel::<Update>(64);
    let stopped = tokio::spawn(registry.run(from_relay, shutdown.clone()));
    let (to_relay, mut from_sources) = mpsc::channel::<Update>(64);
    let watching = watch_remote_secrets(&local, to_relay, metrics, shutdown.clone()).await;
    // The relay: the first instance's updates after its start are held until its removal has
    // been passed on, then delivered. It tells how many it holds, and when it let them go.
    let (held_tx, mut held) = watch::channel((0usize, false));
    let relay = {
        let to_registry = to_registry.clone();
        tokio::spawn(async move {
            let mut first = None;
            let mut holding = Vec::new();
            while let Some(u) = from_sources.recv().await {
                let of_first = first.as_ref() == Some(&u.source.generation);
                match u.event {
                    Event::Started if first.is_none() => first = Some(u.source.generation),
                    Event::Removed if of_first => {
                        to_registry.send(u).await.unwrap();
                        for late in holding.drain(..) {
                            to_registry.send(late).await.unwrap();
                        }
                        held_tx.send_modify(|h| h.1 = true);
                        continue;
                    }
                    _ if of_first && !held_tx.borrow().1 => {
                        holding.push(u);
                        held_tx.send_modify(|h| h.0 += 1);
                        continue;
                    }
                    _ => {}
                }
                to_registry.send(u).await.unwrap();
            }
        })
    };
    let served = |host: &'static str| {
        let table = table.clone();
        move || {
            let wire = globaldns::name::to_wire(host).unwrap();
            matches!(
                table.load().lookup(&wire),
                globaldns::table::Lookup::Exists { host: Some(_), .. }
            )
        }
    };
    let east = || status.load().sources().iter().find(|s| &*s.name == "east").cloned();

    // The watcher of the first instance has listed the cluster; the relay holds that list.
    tokio::time::timeout(Duration::from_secs(15), held.wait_for(|h| h.0 >= 1))
        .await
        .expect("the first instance lists")
        .unwrap();
    let started = eventually(Duration::from_secs(5), || std::future::ready(east().is_some())).await;
    assert!(started && !east().unwrap().synced, "started, not synced: {:?}", east());
    assert!(!served("svc.global")(), "held back");

    // The secret goes: the removal passes, then the held list arrives, late.
    local.delete_secret("istio-system", "east");
    tokio::time::timeout(Duration::from_secs(15), held.wait_for(|h| h.1))
        .await
        .expect("removed")
        .unwrap();
    // A marker after the late update: once it is served, the late update was applied.
    let marker = SourceId::new(SourceKey::files());
    let marker_entry = globaldns::serviceentry::yaml::parse(
        &se("m", "marker", "{hosts: [marker.global], addresses: [240.0.0.9]}"),
        "default",
    )
    .unwrap()
    .entries;
    to_registry.send(marker.says(Event::Started)).await.unwrap();
    to_registry
        .send(marker.says(Event::Listed(marker_entry)))
        .await
        .unwrap();
    assert!(
        eventually(
            Duration::from_secs(10),
            || std::future::ready(served("marker.global")())
        )
        .await
    );
    assert!(
        !served("svc.global")(),
        "a late update does not bring a removed cluster back"
    );
    assert!(east().is_none(), "nor its status: {:?}", east());

    // The same cluster ID added back later: a new instance, served again.
    local.apply_secret("istio-system", "east", label, &secret);
    assert!(
        eventually(Duration::from_secs(15), || std::future::ready(served("svc.global")())).await,
        "served again"
    );
    assert!(east().is_some_and(|s| s.synced));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the registry stops")
        .unwrap();
    watching.await.unwrap();
    relay.abort();
}
