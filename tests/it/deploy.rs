//! deploy/ is checked: the kustomize base renders, every object validates against the
//! Kubernetes schemas (kubernetes-validate, strict), the RBAC grants nothing beyond what the
//! sources need, the Deployment is hardened and passes only flags the binary knows, and
//! deploy/smoke.sh passes against a live server and fails when it should.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::support::*;
use crate::upstream::{Behaviour, Upstream};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

const CLUSTER_SCOPED: [&str; 4] = [
    "ClusterRole",
    "ClusterRoleBinding",
    "Namespace",
    "CustomResourceDefinition",
];

/// What `kubectl apply -k deploy/` sends: the base has only `namespace`, `labels` and
/// `resources` (no patches), so rendering it is applying those two fields.
fn render() -> Vec<Value> {
    let kustomization = &yaml_docs(&deploy_dir().join("kustomization.yaml"))[0];
    let known: Vec<&str> = kustomization.as_object().unwrap().keys().map(String::as_str).collect();
    for key in &known {
        assert!(
            ["apiVersion", "kind", "namespace", "labels", "resources"].contains(key),
            "kustomization field {key} needs a real kustomize"
        );
    }
    let namespace = kustomization["namespace"].as_str().unwrap();
    let labels = kustomization["labels"][0]["pairs"].as_object().unwrap().clone();
    let mut objects = Vec::new();
    for resource in kustomization["resources"].as_array().unwrap() {
        for mut obj in yaml_docs(&deploy_dir().join(resource.as_str().unwrap())) {
            if !CLUSTER_SCOPED.contains(&obj["kind"].as_str().unwrap()) {
                obj["metadata"]["namespace"] = json!(namespace);
            }
            for (k, v) in &labels {
                obj["metadata"]["labels"][k] = v.clone();
            }
            objects.push(obj);
        }
    }
    objects
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn the_base_renders_and_validates_against_the_kubernetes_schemas() {
    require("kubernetes-validate");
    let objects = render();
    let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, obj) in objects.iter().enumerate() {
        let path = dir.path().join(format!("{i}.json"));
        std::fs::write(&path, obj.to_string()).unwrap();
        files.push(path);
    }
    let kube_dns = deploy_dir().join("kube-dns/stubdomains.yaml");
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files)
        .arg(kube_dns)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), files.len() + 1, "{text}");
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
    let help = Command::new(env!("CARGO_BIN_EXE_globaldns"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "serve");
    for flag in &args[1..] {
        let flag = flag.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{flag} is not a serve flag"
        );
    }
    for env in c["env"].as_array().unwrap() {
        let name = env["name"].as_str().unwrap();
        assert!(help.contains(&format!("env: {name}")), "{name} is not read by serve");
    }
    let service = find(&objects, "Service")[0];
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
