//! An emulated Kubernetes API server speaking the real list/watch protocol for ServiceEntries
//! (at the CRD versions it is told to serve) and Secrets, over plain HTTP on loopback, for the
//! real `kube` client:
//! - discovery (`/apis`, `/apis/networking.istio.io/{v}`);
//! - lists with a resourceVersion, `limit` and `continue` pagination (pages of the client's
//!   `limit`, the whole list without one), label selectors;
//! - chunked watch streams from a resourceVersion, with bookmarks when asked for; `410 Gone` as
//!   an ERROR event for a resourceVersion older than the last compaction;
//! - what `kubectl` also needs ([`objects`]): core discovery, one object's get, create and
//!   delete, field selectors;
//! - faults: dropped watches (the connection is cut), 500 errors, full outages (connections
//!   refused and cut) and return, CRD versions that stop being served (404).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

#[path = "kubeapi/objects.rs"]
mod objects;

const GROUP: &str = "networking.istio.io";

type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    kind: &'static str,
    kind_event: &'static str,
    object: Value,
}

struct State {
    rv: u64,
    versions: Vec<String>,
    /// (resource, namespace, name) → object.
    objects: BTreeMap<(&'static str, String, String), Value>,
    log: Vec<Change>,
    compacted: u64,
    down: bool,
    failing: bool,
    requests: Vec<String>,
}

/// The emulated API server.
pub(crate) struct KubeApi {
    pub(crate) addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<Change>,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never: Infallible| match never {})
                .boxed(),
        )
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

fn query(req: &Request<Bytes>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decoded(v)))
        .collect()
}

/// `v` with its `%XX` escapes decoded (`+` is a space in a query).
fn percent_decoded(v: &str) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let byte = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(byte.unwrap_or(b'%'));
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn labels_match(obj: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector else { return true };
    selector.split(',').all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

/// The object as served at `version` (ServiceEntries are stored version-less).
fn present(kind: &str, version: &str, mut obj: Value) -> Value {
    if kind == "serviceentries" {
        obj["apiVersion"] = json!(format!("{GROUP}/{version}"));
        obj["kind"] = json!("ServiceEntry");
    } else {
        obj["apiVersion"] = json!("v1");
        obj["kind"] = json!("Secret");
    }
    obj
}

impl KubeApi {
    /// Starts a server serving ServiceEntries at `versions` (e.g. `["v1", "v1beta1"]`).
    pub(crate) async fn start(versions: &[&str]) -> KubeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            rv: 1000,
            versions: versions.iter().map(|v| v.to_string()).collect(),
            objects: BTreeMap::new(),
            log: Vec::new(),
            compacted: 0,
            down: false,
            failing: false,
            requests: Vec::new(),
        }));
        let (changes, _) = broadcast::channel(4096);
        let (cut, _) = watch::channel(0u64);
        let api = KubeApi {
            addr,
            state,
            changes,
            cut,
        };
        let (state, changes, cut) = (api.state.clone(), api.changes.clone(), api.cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                if state.lock().unwrap().down {
                    drop(stream); // refused, as near as a listening socket can
                    continue;
                }
                let (state, changes) = (state.clone(), changes.clone());
                let mut cut_rx = cut.subscribe();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (state, changes) = (state.clone(), changes.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            Ok::<_, Infallible>(handle(&state, &changes, Request::from_parts(parts, body)))
                        }
                    });
                    let conn =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        api
    }

    fn record(&self, kind: &'static str, kind_event: &'static str, namespace: &str, name: &str, object: Option<Value>) {
        record(
            &mut self.state.lock().unwrap(),
            &self.changes,
            kind,
            kind_event,
            namespace,
            name,
            object,
        );
    }

    /// Creates or replaces a ServiceEntry; `spec` and `status` are JSON.
    pub(crate) fn apply_se(&self, namespace: &str, name: &str, spec: Value, status: Option<Value>) {
        let exists =
            self.state
                .lock()
                .unwrap()
                .objects
                .contains_key(&("serviceentries", namespace.into(), name.into()));
        let mut obj = json!({"metadata": {"uid": format!("uid-{namespace}-{name}"), "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": spec});
        if let Some(status) = status {
            obj["status"] = status;
        }
        self.record(
            "serviceentries",
            if exists { "MODIFIED" } else { "ADDED" },
            namespace,
            name,
            Some(obj),
        );
    }

    pub(crate) fn delete_se(&self, namespace: &str, name: &str) {
        self.record("serviceentries", "DELETED", namespace, name, None);
    }

    /// Creates or replaces a Secret with `labels` and string `data` (stored base64).
    pub(crate) fn apply_secret(&self, namespace: &str, name: &str, labels: Value, data: &[(&str, &str)]) {
        use base64::Engine as _;
        let exists = self
            .state
            .lock()
            .unwrap()
            .objects
            .contains_key(&("secrets", namespace.into(), name.into()));
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        let obj = json!({"metadata": {"labels": labels}, "type": "Opaque", "data": data});
        self.record(
            "secrets",
            if exists { "MODIFIED" } else { "ADDED" },
            namespace,
            name,
            Some(obj),
        );
    }

    pub(crate) fn delete_secret(&self, namespace: &str, name: &str) {
        self.record("secrets", "DELETED", namespace, name, None);
    }

    /// Forgets history: a watch from a resourceVersion older than the current one gets 410 Gone.
    pub(crate) fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        s.compacted = s.rv;
        s.log.clear();
    }

    /// Cuts every open connection (watches included); clients reconnect.
    pub(crate) fn drop_connections(&self) {
        self.cut.send_modify(|g| *g += 1);
    }

    /// Takes the server away (every connection cut, new ones closed at once) or brings it back.
    pub(crate) fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
        if down {
            self.drop_connections();
        }
    }

    /// Answers every request with 500 Internal Server Error (open watches are cut), or stops.
    pub(crate) fn set_failing(&self, failing: bool) {
        self.state.lock().unwrap().failing = failing;
        if failing {
            self.drop_connections();
        }
    }

    /// Serves ServiceEntries at `versions` from now on (a CRD version starts or stops being
    /// served); open connections are cut, as an API server ends the watches of a changed CRD.
    pub(crate) fn set_versions(&self, versions: &[&str]) {
        self.state.lock().unwrap().versions = versions.iter().map(|v| v.to_string()).collect();
        self.drop_connections();
    }

    /// Paths requested so far.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// A kubeconfig with one context, `name`, authenticating with a bearer `token`.
    pub(crate) fn kubeconfig(&self, name: &str, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: http://{}\n\
             users:\n- name: {name}-user\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-user\n\
             current-context: {name}\n",
            self.addr
        )
    }
}

/// Writes [`merged_kubeconfig`] of `parts` to `dir/kubeconfig`; its path.
pub(crate) fn write_kubeconfig(dir: &Path, parts: &[(&KubeApi, &str)]) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(&path, merged_kubeconfig(parts)).unwrap();
    path
}

/// Several API servers' contexts in one kubeconfig.
pub(crate) fn merged_kubeconfig(parts: &[(&KubeApi, &str)]) -> String {
    let mut clusters = String::new();
    let mut users = String::new();
    let mut contexts = String::new();
    for (api, name) in parts {
        clusters.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: http://{}\n",
            api.addr
        ));
        users.push_str(&format!(
            "- name: {name}-user\n  user:\n    token: token-{name}-do-not-log\n"
        ));
        contexts.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-user\n"
        ));
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n{clusters}users:\n{users}contexts:\n{contexts}current-context: {}\n",
        parts[0].1
    )
}

/// Applies one write and streams it to the watches; the object as stored, `None` when a
/// deletion found nothing.
fn record(
    s: &mut State,
    changes: &broadcast::Sender<Change>,
    kind: &'static str,
    kind_event: &'static str,
    namespace: &str,
    name: &str,
    object: Option<Value>,
) -> Option<Value> {
    s.rv += 1;
    let rv = s.rv;
    let key = (kind, namespace.to_string(), name.to_string());
    let object = match object {
        Some(mut obj) => {
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            obj["metadata"]["namespace"] = json!(namespace);
            obj["metadata"]["name"] = json!(name);
            s.objects.insert(key, obj.clone());
            obj
        }
        None => {
            let mut old = s.objects.remove(&key)?;
            old["metadata"]["resourceVersion"] = json!(rv.to_string());
            old
        }
    };
    let change = Change {
        rv,
        kind,
        kind_event,
        object: object.clone(),
    };
    s.log.push(change.clone());
    // A server that is away or failing has cut its watches: nothing is streamed live, even on a
    // connection whose cut has not been processed yet. Watches resumed later replay it from the log.
    if !(s.down || s.failing) {
        let _ = changes.send(change);
    }
    Some(object)
}

fn handle(state: &Mutex<State>, changes: &broadcast::Sender<Change>, req: Request<Bytes>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let q = query(&req);
    let mut s = state.lock().unwrap();
    s.requests.push(req.uri().to_string());
    if s.failing {
        return full(
            StatusCode::INTERNAL_SERVER_ERROR,
            status(500, "InternalError", "etcd is having a bad day"),
        );
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Some(response) = objects::route(&mut s, changes, &req, &segments, &q) {
        return response;
    }
    if req.method() != Method::GET {
        return full(
            StatusCode::METHOD_NOT_ALLOWED,
            status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ),
        );
    }
    match segments.as_slice() {
        ["apis"] => {
            let versions: Vec<Value> = s
                .versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{GROUP}/{v}"), "version": v}))
                .collect();
            let groups = if versions.is_empty() {
                vec![]
            } else {
                vec![json!({"name": GROUP, "versions": versions, "preferredVersion": versions[0]})]
            };
            full(
                StatusCode::OK,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        ["apis", GROUP, v] if s.versions.iter().any(|x| x == v) => full(
            StatusCode::OK,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{v}"), "resources": [
                {"name": "serviceentries", "singularName": "serviceentry", "namespaced": true, "kind": "ServiceEntry",
                 "verbs": ["delete", "get", "list", "patch", "create", "update", "watch"], "shortNames": ["se"]},
                {"name": "serviceentries/status", "singularName": "", "namespaced": true, "kind": "ServiceEntry",
                 "verbs": ["get", "patch", "update"]}
            ]}),
        ),
        ["apis", GROUP, v, "serviceentries"] if s.versions.iter().any(|x| x == v) => {
            let v = v.to_string();
            collection(&mut s, changes, "serviceentries", None, &v, &q)
        }
        ["api", "v1", "namespaces", ns, "secrets"] => {
            let ns = ns.to_string();
            collection(&mut s, changes, "secrets", Some(ns), "v1", &q)
        }
        _ => full(
            StatusCode::NOT_FOUND,
            status(404, "NotFound", "the server could not find the requested resource"),
        ),
    }
}

fn collection(
    s: &mut State,
    changes: &broadcast::Sender<Change>,
    kind: &'static str,
    namespace: Option<String>,
    version: &str,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let selector = q.get("labelSelector").cloned();
    let fields = q.get("fieldSelector").cloned();
    let wanted = move |c_kind: &str, obj: &Value| {
        c_kind == kind
            && namespace
                .as_deref()
                .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
            && labels_match(obj, selector.as_ref())
            && objects::fields_match(obj, fields.as_ref())
    };
    let bookmarks_wanted = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let from: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1024);
        let line = |v: Value| Ok(Frame::data(Bytes::from(format!("{v}\n"))));
        if from < s.compacted {
            let gone = json!({"type": "ERROR", "object": status(410, "Expired", &format!("too old resource version: {from} ({})", s.compacted))});
            let _ = tx.try_send(line(gone));
        } else {
            let mut live = changes.subscribe();
            let backlog: Vec<Change> = s
                .log
                .iter()
                .filter(|c| c.rv > from && wanted(c.kind, &c.object))
                .cloned()
                .collect();
            let version = version.to_string();
            let mut last = backlog.last().map_or(from.max(s.rv), |c| c.rv);
            let wanted = wanted.clone();
            let bookmark_kind = if kind == "serviceentries" {
                "ServiceEntry"
            } else {
                "Secret"
            };
            let api_version = if kind == "serviceentries" {
                format!("{GROUP}/{version}")
            } else {
                "v1".into()
            };
            tokio::spawn(async move {
                for c in backlog {
                    if tx
                        .send(line(
                            json!({"type": c.kind_event, "object": present(kind, &version, c.object)}),
                        ))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let mut bookmarks = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        c = live.recv() => match c {
                            Ok(c) if c.rv > last && wanted(c.kind, &c.object) => {
                                last = c.rv;
                                if tx.send(line(json!({"type": c.kind_event, "object": present(kind, &version, c.object)}))).await.is_err() {
                                    return;
                                }
                            }
                            Ok(c) => last = last.max(c.rv),
                            Err(_) => return,
                        },
                        _ = bookmarks.tick(), if bookmarks_wanted => {
                            let mark = json!({"type": "BOOKMARK", "object": {"kind": bookmark_kind, "apiVersion": api_version, "metadata": {"resourceVersion": last.to_string()}}});
                            if tx.send(line(mark)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        return Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap();
    }
    let offset: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    // Only the page is copied: a list of 100k objects in pages of 500 stays linear.
    let mut matching = s.objects.iter().filter(|((k, _, _), obj)| wanted(k, obj)).skip(offset);
    let page: Vec<Value> = matching
        .by_ref()
        .take(limit)
        .map(|(_, obj)| present(kind, version, obj.clone()))
        .collect();
    let mut metadata = json!({"resourceVersion": s.rv.to_string()});
    if matching.next().is_some() {
        metadata["continue"] = json!((offset + limit).to_string());
    }
    let list_kind = if kind == "serviceentries" {
        "ServiceEntryList"
    } else {
        "SecretList"
    };
    let api_version = if kind == "serviceentries" {
        format!("{GROUP}/{version}")
    } else {
        "v1".into()
    };
    full(
        StatusCode::OK,
        json!({"kind": list_kind, "apiVersion": api_version, "metadata": metadata, "items": page}),
    )
}
