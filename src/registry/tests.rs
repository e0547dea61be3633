//! The registry applies updates in order, alone: late updates of removed or replaced
//! instances are dropped, status events move the published status, the sync timeout is its
//! own decision, and commits run on its own thread.

use std::net::IpAddr;

use super::*;
use crate::serviceentry::{Entry, EntryId, yaml};
use crate::source::Rank;
use crate::table::Lookup;

fn entry(name: &str, host: &str, address: &str) -> Entry {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{hosts: [{host}], addresses: [{address}]}}\n"
    );
    yaml::parse(&text, "default").unwrap().entries.remove(0)
}

fn registry(local: Option<SourceKey>, sync_timeout: Duration) -> Registry {
    let settings = TableSettings::new(&["global"]).unwrap();
    Registry::new(settings, local, sync_timeout, Arc::new(Metrics::new()))
}

/// The addresses `host` is served with, and from which source.
fn served(registry: &Registry, host: &str) -> Option<(Vec<IpAddr>, String)> {
    let table = registry.table().load_full();
    let wire = crate::name::to_wire(host).unwrap();
    match table.lookup(&wire) {
        Lookup::Exists { host: Some(h), .. } => Some((h.addresses(), h.source.to_string())),
        _ => None,
    }
}

fn status(registry: &Registry, name: &str) -> Option<SourceStatus> {
    let status = registry.status().load_full();
    status.sources().iter().find(|s| &*s.name == name).cloned()
}

fn apply_all(registry: &mut Registry, updates: impl IntoIterator<Item = Update>) {
    for u in updates {
        registry.apply(u);
    }
    registry.publish();
}

#[test]
fn a_late_update_of_a_removed_cluster_is_dropped_and_the_cluster_can_come_back() {
    let mut r = registry(None, Duration::from_secs(10));
    let first = SourceId::new(SourceKey::remote("east"));
    apply_all(
        &mut r,
        [
            first.says(Event::Started),
            first.says(Event::Listed(vec![entry("svc", "svc.global", "240.0.1.1")])),
        ],
    );
    assert_eq!(served(&r, "svc.global").unwrap().1, "east");

    // The secret goes; its watcher, being stopped, still delivers what it had in hand.
    apply_all(
        &mut r,
        [
            first.says(Event::Removed),
            first.says(Event::Changed(vec![(
                EntryId {
                    namespace: "ns".into(),
                    name: "svc".into(),
                },
                Some(entry("svc", "svc.global", "240.0.1.2")),
            )])),
            first.says(Event::Listed(vec![entry("late", "late.global", "240.0.1.3")])),
            first.says(Event::Failed("connection reset".into())),
            first.says(Event::Started),
        ],
    );
    assert_eq!(served(&r, "svc.global"), None, "removed, and not brought back");
    assert_eq!(served(&r, "late.global"), None);
    assert!(status(&r, "east").is_none(), "no status either");
    assert!(r.status().load().ready());

    // The same cluster ID added back later: a new instance, served again.
    let again = SourceId::new(SourceKey::remote("east"));
    apply_all(&mut r, [again.says(Event::Started)]);
    assert!(!r.status().load().ready(), "waits for the new instance to sync");
    apply_all(
        &mut r,
        [again.says(Event::Listed(vec![entry("svc", "svc.global", "240.0.1.9")]))],
    );
    assert_eq!(
        served(&r, "svc.global").unwrap().0,
        ["240.0.1.9".parse::<IpAddr>().unwrap()]
    );
    let s = status(&r, "east").unwrap();
    assert!(s.synced && s.generation == again.generation, "{s:?}");
    // The first instance is still gone for good.
    apply_all(&mut r, [first.says(Event::Removed)]);
    assert!(
        served(&r, "svc.global").is_some(),
        "an old instance cannot remove the new one"
    );
}

#[test]
fn a_replaced_instance_is_served_until_its_successor_lists_and_is_heard_no_more() {
    let mut r = registry(None, Duration::from_secs(10));
    let old = SourceId::new(SourceKey::remote("east"));
    apply_all(
        &mut r,
        [
            old.says(Event::Started),
            old.says(Event::Listed(vec![entry("svc", "svc.global", "240.0.1.1")])),
        ],
    );
    let new = SourceId::new(SourceKey::remote("east"));
    apply_all(
        &mut r,
        [
            new.says(Event::Started),
            old.says(Event::Listed(vec![entry("other", "old.global", "240.0.1.5")])),
            old.says(Event::Started),
        ],
    );
    assert!(served(&r, "svc.global").is_some(), "kept until the new instance lists");
    assert!(served(&r, "old.global").is_none(), "the replaced instance is not heard");
    assert!(
        status(&r, "east").unwrap().synced,
        "still synced: its entries are served"
    );
    apply_all(
        &mut r,
        [new.says(Event::Listed(vec![entry("svc", "svc.global", "240.0.2.1")]))],
    );
    assert_eq!(
        served(&r, "svc.global").unwrap().0,
        ["240.0.2.1".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn failed_makes_a_synced_source_stale_and_resumed_clears_it() {
    let key = SourceKey {
        rank: Rank::Local,
        name: "local".into(),
    };
    let mut r = registry(Some(key.clone()), Duration::from_secs(10));
    let id = SourceId::new(key);
    apply_all(
        &mut r,
        [id.says(Event::Started), id.says(Event::Failed("refused".into()))],
    );
    let s = status(&r, "local").unwrap();
    assert!(!s.stale && s.error.is_some(), "never synced: failing, not stale");
    assert!(!r.status().load().ready() && !r.table().load().synced());

    apply_all(
        &mut r,
        [id.says(Event::Listed(vec![entry("a", "a.global", "240.0.0.1")]))],
    );
    let serial = r.table().load().versions()[0].serial;
    assert!(r.status().load().ready() && r.table().load().synced());
    apply_all(&mut r, [id.says(Event::Failed("watch failed".into()))]);
    let published = r.status().load_full();
    assert!(published.is_stale("local") && published.any_stale());
    assert_eq!(published.sources()[0].error.as_deref(), Some("watch failed"));
    assert!(published.ready(), "stale is still ready");
    let table = r.table().load_full();
    assert!(
        table.is_stale("local") && table.any_stale() && !table.is_stale("loca"),
        "staleness is published with the table, where answers read it"
    );
    assert_eq!(table.versions()[0].serial, serial, "staleness changes no serial");

    apply_all(&mut r, [id.says(Event::Resumed)]);
    let published = r.status().load_full();
    assert!(!published.is_stale("local") && !published.any_stale());
    assert!(!r.table().load().any_stale(), "no longer stale in the table either");
    assert_eq!(published.sources()[0].error, None);
    assert_eq!(
        r.table().load().versions()[0].serial,
        serial,
        "status events leave the serial alone"
    );
}

#[test]
fn the_registry_stops_waiting_for_a_remote_cluster_past_the_sync_timeout_not_for_the_local_one() {
    let local = SourceKey {
        rank: Rank::Local,
        name: "local".into(),
    };
    let mut r = registry(Some(local.clone()), Duration::from_secs(5));
    let (l, remote) = (SourceId::new(local), SourceId::new(SourceKey::remote("east")));
    apply_all(&mut r, [l.says(Event::Started), remote.says(Event::Started)]);
    let started = Instant::now();
    assert!(r.next_give_up().is_some_and(|at| at > started + Duration::from_secs(4)));
    r.give_up_waiting(started + Duration::from_secs(4));
    r.publish();
    assert_eq!(r.status().load().waiting().collect::<Vec<_>>(), ["local", "east"]);
    r.give_up_waiting(started + Duration::from_secs(6));
    r.publish();
    assert_eq!(
        r.status().load().waiting().collect::<Vec<_>>(),
        ["local"],
        "the local cluster is always waited for"
    );
    assert!(status(&r, "east").unwrap().gave_up_waiting);
    assert!(r.next_give_up().is_none(), "nothing more to decide");
    apply_all(&mut r, [l.says(Event::Listed(Vec::new()))]);
    assert!(r.status().load().ready());
}

/// The value of `globaldns_ready` in the registry's metrics.
fn ready_gauge(registry: &Registry) -> String {
    let text = registry.metrics.encode(&[]);
    let line = text.lines().find(|l| l.starts_with("globaldns_ready "));
    line.unwrap_or_else(|| panic!("no globaldns_ready in:\n{text}"))["globaldns_ready ".len()..].to_string()
}

#[test]
fn the_ready_gauge_follows_every_published_status_the_sync_timeout_included() {
    let local = SourceKey {
        rank: Rank::Local,
        name: "local".into(),
    };
    let mut r = registry(Some(local.clone()), Duration::from_secs(5));
    assert_eq!(ready_gauge(&r), "1", "nothing to wait for yet, as /readyz says");
    let (l, remote) = (SourceId::new(local), SourceId::new(SourceKey::remote("east")));
    apply_all(&mut r, [l.says(Event::Started), remote.says(Event::Started)]);
    let started = Instant::now();
    assert_eq!(ready_gauge(&r), "0");
    apply_all(&mut r, [l.says(Event::Listed(Vec::new()))]);
    assert!(!r.status().load().ready());
    assert_eq!(ready_gauge(&r), "0", "still waiting for east");
    // The timer's decision: east stops holding readiness back.
    r.give_up_waiting(started + Duration::from_secs(6));
    r.publish();
    assert!(r.status().load().ready());
    assert_eq!(ready_gauge(&r), "1");
    // A cluster added later is waited for (until its own sync timeout).
    let west = SourceId::new(SourceKey::remote("west"));
    apply_all(&mut r, [west.says(Event::Started)]);
    assert!(!r.status().load().ready());
    assert_eq!(ready_gauge(&r), "0");
}

#[test]
fn a_spawned_registry_applies_updates_from_another_runtime_and_stops() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let r = registry(None, Duration::from_secs(10));
        let (table, status) = (r.table(), r.status());
        let (tx, rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let stopped = r.spawn(rx, shutdown.clone()).unwrap();
        let id = SourceId::new(SourceKey::files());
        tx.send(id.says(Event::Started)).await.unwrap();
        tx.send(id.says(Event::Listed(vec![entry("a", "a.global", "240.0.0.1")])))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while table.load().host_count() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(table.load().host_count(), 1);
        assert!(status.load().sources()[0].synced);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .expect("stops");
    });
}

#[test]
fn incomplete_entries_are_served_but_never_sync_the_source_until_a_complete_list() {
    let mut r = registry(None, Duration::from_secs(5));
    let files = SourceId::new(SourceKey::files());
    let error = "/entries/bad.yaml: does not parse".to_string();
    apply_all(
        &mut r,
        [
            files.says(Event::Started),
            files.says(Event::Incomplete(
                vec![entry("a", "a.global", "240.0.0.1")],
                error.clone(),
            )),
        ],
    );
    assert!(served(&r, "a.global").is_some(), "what loaded is served");
    let s = status(&r, "files").unwrap();
    assert!(!s.synced && s.error == Some(error), "{s:?}");
    assert!(!r.status().load().ready());
    assert!(r.next_give_up().is_none(), "incomplete files are never given up on");
    r.give_up_waiting(Instant::now() + Duration::from_secs(60));
    r.publish();
    assert!(!r.status().load().ready(), "not even past the sync timeout");
    apply_all(
        &mut r,
        [files.says(Event::Listed(vec![entry("a", "a.global", "240.0.0.1")]))],
    );
    let s = status(&r, "files").unwrap();
    assert!(s.synced && s.error.is_none(), "{s:?}");
    assert!(r.status().load().ready());
}
