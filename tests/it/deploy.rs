//! deploy/ is checked: the kustomize base renders with the real kustomize (`kubectl
//! kustomize`, what `kubectl apply -k` sends), every object validates against the Kubernetes
//! schemas (kubernetes-validate, strict), the RBAC grants nothing beyond what the sources need,
//! the Deployment is hardened and passes only flags the binary knows, the NetworkPolicy admits
//! DNS from everywhere and the admin port from monitoring only, the Dockerfile ships the
//! glibc release build as non-root at the path the Deployment runs, and deploy/smoke.sh
//! passes against a live server and fails when it should.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::kubectl::kubectl;
use crate::support::*;
use crate::upstream::{Behaviour, Upstream};

pub(crate) fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// `kubectl kustomize dir`: what `kubectl apply -k dir` sends, as YAML text.
pub(crate) fn kustomize(dir: &Path) -> String {
    let out = kubectl().arg("kustomize").arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The objects of a rendered kustomization.
pub(crate) fn objects(rendered: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(rendered).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The objects `kubectl apply -k deploy/` sends.
fn render() -> Vec<Value> {
    objects(&kustomize(&deploy_dir()))
}

/// `kubernetes-validate --strict` of `files`, each holding one or more objects: passes every
/// one of `count` objects.
pub(crate) fn validate(files: &[PathBuf], count: usize) {
    require("kubernetes-validate");
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(files)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), count, "{text}");
}

pub(crate) fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn the_base_renders_with_kustomize_and_validates_against_the_kubernetes_schemas() {
    let rendered = kustomize(&deploy_dir());
    let objects = objects(&rendered);
    let mut kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ],
        "nothing that needs prometheus-operator's CRDs (deploy/monitoring/), no transfer primary (components/transfer)"
    );
    for obj in &objects {
        let cluster_scoped = obj["kind"].as_str().unwrap().starts_with("Cluster");
        assert_eq!(
            obj["metadata"]["namespace"].as_str(),
            (!cluster_scoped).then_some("istio-system"),
            "{obj}"
        );
        assert_eq!(
            obj["metadata"]["labels"]["app.kubernetes.io/name"], "globaldns",
            "{obj}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rendered.yaml");
    std::fs::write(&path, &rendered).unwrap();
    validate(
        &[path, deploy_dir().join("kube-dns/stubdomains.yaml")],
        objects.len() + 1,
    );
}

#[test]
fn rbac_grants_no_more_than_the_sources_need() {
    let objects = render();
    let rules = |kind: &str| -> Vec<Value> { find(&objects, kind).iter().map(|r| r["rules"].clone()).collect() };
    assert_eq!(
        rules("ClusterRole"),
        [
            json!([{"apiGroups": ["networking.istio.io"], "resources": ["serviceentries"], "verbs": ["get", "list", "watch"]}])
        ]
    );
    assert_eq!(
        rules("Role"),
        [json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}])]
    );
    let role = find(&objects, "Role")[0];
    assert_eq!(
        role["metadata"]["namespace"], "istio-system",
        "secrets of the remote-secrets namespace only"
    );
    for binding in find(&objects, "ClusterRoleBinding")
        .into_iter()
        .chain(find(&objects, "RoleBinding"))
    {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "globaldns", "namespace": "istio-system"}])
        );
    }
    assert_eq!(find(&objects, "ClusterRoleBinding")[0]["roleRef"]["name"], "globaldns");
    assert_eq!(
        find(&objects, "RoleBinding")[0]["roleRef"]["kind"],
        "Role",
        "never a ClusterRole for secrets"
    );
}

#[test]
fn the_deployment_is_hardened_and_uses_real_flags() {
    let objects = render();
    let d = find(&objects, "Deployment")[0];
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"]["sidecar.istio.io/inject"], "false");
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["spec"]["topologySpreadConstraints"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert!(
        c["securityContext"]["capabilities"]["add"].is_null(),
        "listening on 5353 needs no capability"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["limits"]["memory"].is_string());
    assert_container_uses_real_flags(c);
    let service = find(&objects, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "globaldns")
        .unwrap();
    let ports: Vec<(String, i64, String, String)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["port"].as_i64().unwrap(),
                p["protocol"].as_str().unwrap().into(),
                p["targetPort"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("dns-udp".into(), 53, "UDP".into(), "dns-udp".into()),
            ("dns-tcp".into(), 53, "TCP".into(), "dns-tcp".into())
        ]
    );
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains("kubectl apply -k deploy/"),
        "the README deploys what deploy/ holds"
    );
}

/// `globaldns serve --help`.
fn serve_help() -> String {
    let help = Command::new(env!("CARGO_BIN_EXE_globaldns"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    String::from_utf8(help.stdout).unwrap()
}

/// The container `c` runs `serve` with flags and environment variables it reads.
pub(crate) fn assert_container_uses_real_flags(c: &Value) {
    let help = serve_help();
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_serve_args(&args);
    for env in c["env"].as_array().unwrap() {
        let name = env["name"].as_str().unwrap();
        assert!(help.contains(&format!("env: {name}")), "{name} is not read by serve");
    }
}

/// `args` are `serve` and flags it knows.
fn assert_serve_args(args: &[&str]) {
    let help = serve_help();
    assert_eq!(args[0], "serve");
    for flag in &args[1..] {
        let flag = flag.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{flag} is not a serve flag"
        );
    }
}

/// The Dockerfile's instructions as (keyword, arguments), continuation lines joined and
/// comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
        .map(|(k, v)| (k.to_ascii_uppercase(), v.trim().to_owned()))
        .collect()
}

/// The image ships the build every figure is measured on: a release binary against glibc, on
/// a base of the same Debian release as the build stage (so the glibc it runs on is the one
/// it was linked against) that holds every library the binary needs, at the path the
/// Deployment runs (it gives only args: the image's ENTRYPOINT runs), as the non-root user
/// the Deployment names. Images cannot be built here (no image registry); this is what can be
/// checked without building one.
#[test]
fn the_image_ships_the_measured_glibc_build_as_non_root() {
    let instructions = dockerfile();
    let all = |keyword: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let from = all("FROM");
    assert_eq!(from.len(), 2, "a build stage and the image: {from:?}");
    let (build, stage) = from[0].split_once(" AS ").expect("a named build stage");
    let base = from[1];
    // Debian releases by codename (the Rust images) and by number (distroless).
    let release = |image: &str| {
        [("bookworm", "debian12"), ("trixie", "debian13")]
            .into_iter()
            .find(|(codename, number)| image.contains(codename) || image.contains(number))
            .map(|(_, number)| number)
    };
    assert!(
        build.starts_with("rust:") && release(build).is_some(),
        "built with glibc on Debian: {build}"
    );
    assert!(
        base.starts_with("gcr.io/distroless/cc-") && base.ends_with(":nonroot"),
        "a minimal glibc base (distroless cc: glibc, libgcc, CA certificates), non-root: {base}"
    );
    assert_eq!(release(base), release(build), "the glibc it was linked against");
    let dockerfile_text = format!("{instructions:?}").to_ascii_lowercase();
    for foreign in ["musl", "alpine", "static"] {
        assert!(!dockerfile_text.contains(foreign), "{foreign} in the Dockerfile");
    }
    assert!(
        all("RUN")
            .iter()
            .any(|r| r.starts_with("cargo build --release --locked --bin globaldns ")),
        "the release profile, the locked dependencies: {:?}",
        all("RUN")
    );

    let copy = all("COPY");
    let from_build = format!("--from={stage} ");
    let installed = copy
        .iter()
        .find_map(|c| c.strip_prefix(&from_build))
        .and_then(|c| c.split_whitespace().nth(1))
        .expect("the binary copied from the build stage");
    let entrypoint: Vec<String> = serde_json::from_str(all("ENTRYPOINT")[0]).unwrap();
    assert_eq!(entrypoint, [installed], "the image runs the binary it ships");

    let objects = render();
    let pod = &find(&objects, "Deployment")[0]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(
        container["command"].is_null(),
        "the Deployment runs the image's ENTRYPOINT"
    );
    let user = all("USER");
    let (uid, gid) = user[0].split_once(':').expect("USER uid:gid");
    let (uid, gid): (i64, i64) = (uid.parse().unwrap(), gid.parse().unwrap());
    assert_ne!(uid, 0, "not root");
    assert_eq!(
        (uid, gid),
        (
            pod["securityContext"]["runAsUser"].as_i64().unwrap(),
            pod["securityContext"]["runAsGroup"].as_i64().unwrap()
        ),
        "the user the Deployment runs as"
    );
    let cmd: Vec<String> = serde_json::from_str(all("CMD")[0]).unwrap();
    assert_serve_args(&cmd.iter().map(String::as_str).collect::<Vec<_>>());

    // Every library the binary loads is in the base: glibc's and libgcc's, nothing else.
    require("ldd");
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_globaldns"))
        .output()
        .unwrap();
    let libraries = String::from_utf8(out.stdout).unwrap();
    for line in libraries.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let name = name.rsplit('/').next().unwrap();
        assert!(
            [
                "linux-vdso.so",
                "ld-linux-",
                "libc.so",
                "libm.so",
                "libgcc_s.so",
                "libpthread.so",
                "libdl.so",
                "librt.so"
            ]
            .iter()
            .any(|known| name.starts_with(known)),
            "{name} is not in the base image: {libraries}"
        );
    }
}

#[test]
fn the_network_policy_admits_dns_from_everywhere_and_the_admin_port_from_monitoring_only() {
    let objects = render();
    let policy = &find(&objects, "NetworkPolicy")[0]["spec"];
    let pod = &find(&objects, "Deployment")[0]["spec"]["template"];
    for (k, v) in policy["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod["metadata"]["labels"][k], v, "the policy selects the pods");
    }
    assert_eq!(
        policy["policyTypes"],
        json!(["Ingress"]),
        "egress (API servers, upstreams) stays open"
    );
    let container = &pod["spec"]["containers"][0];
    let container_port = |name: &str| -> Value {
        let p = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap();
        json!({"protocol": p["protocol"], "port": p["containerPort"]})
    };
    let ingress = policy["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2, "{policy}");
    assert!(ingress[0]["from"].is_null(), "DNS from everywhere");
    assert_eq!(
        ingress[0]["ports"],
        json!([container_port("dns-udp"), container_port("dns-tcp")])
    );
    let service = find(&objects, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "globaldns")
        .unwrap();
    for p in service["spec"]["ports"].as_array().unwrap() {
        assert!(
            ingress[0]["ports"]
                .as_array()
                .unwrap()
                .contains(&container_port(p["targetPort"].as_str().unwrap())),
            "the Service's port {p} is admitted"
        );
    }
    assert_eq!(
        ingress[1],
        json!({
            "from": [{"namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring"]}
            ]}}],
            "ports": [container_port("http-admin")]
        })
    );
    // The probes use the admin port: they come from the pod's node, which a NetworkPolicy
    // always admits.
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "http-admin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_script_passes_against_a_live_server_and_fails_on_a_wrong_answer() {
    require("dig");
    let up = Upstream::start(Behaviour::Answer).await;
    let entries = std::fs::read_to_string(examples_dir().join("httpbin-bar-global.yaml")).unwrap();
    let server = Server::start_forwarding(&[("se.yaml", &entries)], Some(forwarding(&[up.addr]))).await;
    let run = |args: &[&str]| {
        let out = Command::new(deploy_dir().join("smoke.sh"))
            .args(args)
            .env("GLOBALDNS_SERVER", "127.0.0.1")
            .env("GLOBALDNS_PORT", server.addr.port().to_string())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let (code, text) = tokio::task::block_in_place(|| run(&["httpbin.bar.global", "240.0.0.2"]));
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.matches("PASS").count(), 3, "{text}");
    let (code, text) = tokio::task::block_in_place(|| run(&["httpbin.bar.global", "240.0.0.99"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL  httpbin.bar.global is 240.0.0.99"), "{text}");
    server.stop().await;
}
