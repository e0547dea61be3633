//! deploy/components/transfer: the transfer primary. With the two lines deploy/kustomization.yaml
//! holds commented uncommented, deploy/ renders a one-replica `globaldns-transfer` Deployment
//! with --transfer-to / --notify (through the environment), a headless Service and a
//! NetworkPolicy that select it alone, while the mesh's Service, PodDisruptionBudget and
//! autoscaler keep to the `globaldns` pods; its image and cluster ID are the base's; every
//! object validates.

use std::path::Path;

use serde_json::Value;

use crate::deploy::{assert_container_uses_real_flags, deploy_dir, find, kustomize, objects, validate};

/// The lines of deploy/kustomization.yaml that turn the component on, commented.
const COMMENTED: &str = "# components:\n#   - components/transfer\n";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The `app` label a selector of `obj` asks for.
fn selects(obj: &Value) -> &Value {
    let spec = &obj["spec"];
    [
        &spec["selector"]["app"],
        &spec["selector"]["matchLabels"]["app"],
        &spec["podSelector"]["matchLabels"]["app"],
    ]
    .into_iter()
    .find(|v| !v.is_null())
    .unwrap_or(&Value::Null)
}

#[test]
fn the_transfer_component_adds_one_replica_with_transfer_flags_and_its_own_service() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("deploy");
    copy_dir(&deploy_dir(), &copy);
    let kustomization = std::fs::read_to_string(copy.join("kustomization.yaml")).unwrap();
    assert!(
        kustomization.contains(COMMENTED),
        "deploy/kustomization.yaml offers the component"
    );
    let on = kustomization.replace(COMMENTED, "components:\n  - components/transfer\n");
    std::fs::write(copy.join("kustomization.yaml"), on).unwrap();
    // The image and the cluster's ID are set once, in deploy/deployment.yaml, as the README
    // says: the transfer primary follows them.
    let base = std::fs::read_to_string(copy.join("deployment.yaml")).unwrap();
    let (image, cluster) = ("ghcr.io/globaldns/globaldns:latest", "value: cluster1");
    assert!(base.contains(image) && base.contains(cluster), "{base}");
    let base = base
        .replace(image, "registry.example/globaldns:v9")
        .replace(cluster, "value: east");
    std::fs::write(copy.join("deployment.yaml"), base).unwrap();
    let rendered = kustomize(&copy);
    let objects = objects(&rendered);

    let transfer = find(&objects, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "globaldns-transfer")
        .expect("the transfer Deployment");
    assert_eq!(
        transfer["spec"]["replicas"], 1,
        "secondaries follow one serial sequence"
    );
    assert_eq!(transfer["spec"]["strategy"]["type"], "Recreate", "never two at once");
    assert_eq!(transfer["metadata"]["namespace"], "istio-system");
    assert_eq!(
        transfer["spec"]["template"]["metadata"]["labels"]["app"],
        "globaldns-transfer"
    );
    let c = &transfer["spec"]["template"]["spec"]["containers"][0];
    assert_container_uses_real_flags(c);
    assert_eq!(c["image"], "registry.example/globaldns:v9", "the base's image");
    let cluster = (c["env"].as_array().unwrap().iter()).find(|e| e["name"] == "GLOBALDNS_CLUSTER_NAME");
    assert_eq!(cluster.unwrap()["value"], "east", "the base's cluster ID");
    let env: Vec<&str> = (c["env"].as_array().unwrap().iter())
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for name in ["GLOBALDNS_TRANSFER_TO", "GLOBALDNS_NOTIFY"] {
        assert!(env.contains(&name), "{name} set: {env:?}");
    }
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");

    let service = find(&objects, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "globaldns-transfer")
        .expect("the headless Service");
    assert_eq!(service["spec"]["clusterIP"], "None");
    // Only the transfer's own objects select the transfer pod; the mesh's never do.
    for obj in &objects {
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        let selected = selects(obj);
        if name == "globaldns-transfer" {
            assert_eq!(selected, "globaldns-transfer", "{obj}");
        } else if !selected.is_null() {
            assert_eq!(selected, "globaldns", "{obj}");
        }
    }
    assert!(
        find(&objects, "NetworkPolicy")
            .iter()
            .any(|p| selects(p) == "globaldns-transfer"),
        "the transfer pod is reachable on DNS"
    );
    let path = dir.path().join("rendered.yaml");
    std::fs::write(&path, &rendered).unwrap();
    validate(&[path], objects.len());
}
