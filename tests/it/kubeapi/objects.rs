//! What `kubectl` asks of the emulated API server beyond the lists and watches the sources use:
//! core discovery (`/api`, `/api/v1`), the namespaced collection of ServiceEntries, one object's
//! get, create, JSON merge patch (RFC 7386, what `kubectl apply` sends for custom resources) and
//! delete, and field selectors on `metadata.name` and `metadata.namespace`.
//!
//! As on a real API server with the `status` subresource (Istio's CRDs have it), a create or a
//! patch leaves `status` alone: only the controller writes it.

use std::collections::BTreeMap;

use bytes::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{Body, Change, GROUP, State, collection, full, present, record, status};

/// Answers the requests of this module; `None` for everything else.
pub(super) fn route(
    s: &mut State,
    changes: &broadcast::Sender<Change>,
    req: &Request<Bytes>,
    segments: &[&str],
    q: &BTreeMap<String, String>,
) -> Option<Response<Body>> {
    let served = |s: &State, v: &str| s.versions.iter().any(|x| x == v);
    let body = req.body();
    let response = match (req.method(), segments) {
        (&Method::GET, ["api"]) => full(
            StatusCode::OK,
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        ),
        (&Method::GET, ["api", "v1"]) => full(
            StatusCode::OK,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
                {"name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret",
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
            ]}),
        ),
        (&Method::GET, ["apis", GROUP, v, "namespaces", ns, "serviceentries"]) if served(s, v) => {
            let (v, ns) = (v.to_string(), ns.to_string());
            collection(s, changes, "serviceentries", Some(ns), &v, q)
        }
        (&Method::POST, ["apis", GROUP, v, "namespaces", ns, "serviceentries"]) if served(s, v) => {
            create(s, changes, v, ns, body)
        }
        (&Method::GET, ["apis", GROUP, v, "namespaces", ns, "serviceentries", name]) if served(s, v) => {
            match s.objects.get(&("serviceentries", ns.to_string(), name.to_string())) {
                Some(obj) => full(StatusCode::OK, present("serviceentries", v, obj.clone())),
                None => not_found(name),
            }
        }
        (&Method::PATCH, ["apis", GROUP, v, "namespaces", ns, "serviceentries", name]) if served(s, v) => {
            let content_type = req.headers().get("content-type").and_then(|c| c.to_str().ok());
            if content_type != Some("application/merge-patch+json") {
                let message = format!("the body of the request was in an unknown format: {content_type:?}");
                return Some(full(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    status(415, "UnsupportedMediaType", &message),
                ));
            }
            patch(s, changes, v, ns, name, body)
        }
        (&Method::DELETE, ["apis", GROUP, v, "namespaces", ns, "serviceentries", name]) if served(s, v) => {
            match record(s, changes, "serviceentries", "DELETED", ns, name, None) {
                Some(obj) => full(StatusCode::OK, present("serviceentries", v, obj)),
                None => not_found(name),
            }
        }
        _ => return None,
    };
    Some(response)
}

fn not_found(name: &str) -> Response<Body> {
    let mut body = status(404, "NotFound", &format!("serviceentries.{GROUP} \"{name}\" not found"));
    body["details"] = json!({"name": name, "group": GROUP, "kind": "serviceentries"});
    full(StatusCode::NOT_FOUND, body)
}

/// `POST` of a new ServiceEntry into namespace `ns`: 201 with the object as stored.
fn create(s: &mut State, changes: &broadcast::Sender<Change>, version: &str, ns: &str, body: &[u8]) -> Response<Body> {
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        return full(
            StatusCode::BAD_REQUEST,
            status(400, "BadRequest", "the body is not JSON"),
        );
    };
    let Some(name) = obj["metadata"]["name"].as_str().map(str::to_owned) else {
        return full(
            StatusCode::UNPROCESSABLE_ENTITY,
            status(422, "Invalid", "metadata.name: Required value"),
        );
    };
    if obj["metadata"]["namespace"].as_str().is_some_and(|n| n != ns) {
        let message = "the namespace of the provided object does not match the namespace sent on the request";
        return full(StatusCode::BAD_REQUEST, status(400, "BadRequest", message));
    }
    if s.objects
        .contains_key(&("serviceentries", ns.to_string(), name.clone()))
    {
        let message = format!("serviceentries.{GROUP} \"{name}\" already exists");
        return full(StatusCode::CONFLICT, status(409, "AlreadyExists", &message));
    }
    let object = obj.as_object_mut().expect("an object: it has a metadata.name");
    object.remove("status");
    object.remove("apiVersion");
    object.remove("kind");
    obj["metadata"]["uid"] = json!(format!("uid-{ns}-{name}-{}", s.rv + 1));
    obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    obj["metadata"]["generation"] = json!(1);
    let stored = record(s, changes, "serviceentries", "ADDED", ns, &name, Some(obj)).expect("a create stores");
    full(StatusCode::CREATED, present("serviceentries", version, stored))
}

/// `PATCH` of ServiceEntry `ns/name` with a JSON merge patch: 200 with the object as stored.
fn patch(
    s: &mut State,
    changes: &broadcast::Sender<Change>,
    version: &str,
    ns: &str,
    name: &str,
    body: &[u8],
) -> Response<Body> {
    let Some(old) = s
        .objects
        .get(&("serviceentries", ns.to_string(), name.to_string()))
        .cloned()
    else {
        return not_found(name);
    };
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return full(
            StatusCode::BAD_REQUEST,
            status(400, "BadRequest", "the body is not JSON"),
        );
    };
    let mut obj = old.clone();
    merge_patch(&mut obj, &patch);
    for kept in ["uid", "creationTimestamp", "generation"] {
        obj["metadata"][kept] = old["metadata"][kept].clone();
    }
    let object = obj.as_object_mut().expect("an object");
    object.remove("apiVersion");
    object.remove("kind");
    match old.get("status") {
        Some(kept) => obj["status"] = kept.clone(),
        None => _ = obj.as_object_mut().expect("an object").remove("status"),
    }
    if obj["spec"] != old["spec"] {
        obj["metadata"]["generation"] = json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
    }
    let stored = record(s, changes, "serviceentries", "MODIFIED", ns, name, Some(obj)).expect("a patch stores");
    full(StatusCode::OK, present("serviceentries", version, stored))
}

/// RFC 7386: objects merge key by key, `null` removes a key, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("made an object");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Whether `obj` matches a field selector such as `metadata.name=x,metadata.namespace=y`
/// (the fields every resource supports; `!=` too).
pub(super) fn fields_match(obj: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let (field, negated, value) = match term.split_once("!=") {
            Some((f, v)) => (f, true, v),
            None => {
                let (f, v) = term
                    .split_once("==")
                    .or_else(|| term.split_once('='))
                    .unwrap_or((term, ""));
                (f, false, v)
            }
        };
        let actual = match field {
            "metadata.name" => obj["metadata"]["name"].as_str(),
            "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
            _ => None,
        };
        (actual == Some(value)) != negated
    })
}
