//! Prometheus metrics, prefix `globaldns_`, served on `/metrics` of the admin endpoint.
//!
//! One set per server, made by `app::start` and handed to every part that counts (sources,
//! registry, listeners, forwarder, admin), as controller-rs hands its `Context`: no global.
//! Label values come from small fixed sets (protocol, query
//! type class, rcode, answer path, forward result, rejection reason, source error kind) or
//! from configuration (upstreams, cluster IDs), never from query names or messages, so
//! cardinality is bounded. Per-query counters are created
//! once up front and kept as handles: the query path does atomic increments only.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::dns::answer::Transport;
use crate::dns::wire::{self, ede};
use crate::serviceentry::Reason;
use crate::source::SourceStatus;

mod durations;

use durations::Durations;

/// Query types counted by name; every other type is `other`.
const QTYPES: [(u16, &str); 11] = [
    (1, "A"),
    (28, "AAAA"),
    (255, "ANY"),
    (6, "SOA"),
    (2, "NS"),
    (12, "PTR"),
    (33, "SRV"),
    (16, "TXT"),
    (15, "MX"),
    (5, "CNAME"),
    (65, "HTTPS"),
];
/// Response codes counted by name (the header's four bits); others are `other`.
const RCODES: [&str; 6] = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];
/// Extended DNS Errors counted (RFC 8914 INFO-CODEs globaldns sends; others are `other`).
const EDES: [(u16, &str); 5] = [
    (ede::STALE_ANSWER, "3"),
    (ede::NOT_READY, "14"),
    (ede::PROHIBITED, "18"),
    (ede::NO_REACHABLE_AUTHORITY, "22"),
    (ede::NETWORK_ERROR, "23"),
];

/// How an answer was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// From the table (in-zone, or an error of ours).
    Authoritative = 0,
    /// From an upstream.
    Forwarded = 1,
}

/// How a forward ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardResult {
    /// The upstream answered.
    Answer = 0,
    /// The attempt timed out.
    Timeout = 1,
    /// The attempt failed (refused, unreachable, …).
    Error = 2,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    rcode: &'static str,
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdeLabels {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabels {
    upstream: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabels {
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransferLabels {
    r#type: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceErrorLabels {
    cluster: String,
    error: &'static str,
}

/// Queries and responses counted by one loop, added to the shared counters in one go
/// ([`Metrics::add`]): the query path touches no shared memory per query.
#[derive(Debug, Default)]
pub struct Tally {
    requests: [u64; QTYPES.len() + 1],
    responses: [u64; RCODES.len() + 1],
    extended_errors: [u64; EDES.len() + 1],
}

impl Tally {
    /// A query of type `qtype` (none: unparsable) was received.
    pub fn request(&mut self, qtype: Option<u16>) {
        let i = qtype
            .and_then(|t| QTYPES.iter().position(|(q, _)| *q == t))
            .unwrap_or(QTYPES.len());
        self.requests[i] += 1;
    }

    /// `response` (its bytes) was made.
    pub fn response(&mut self, response: &[u8]) {
        let rcode = response
            .get(3)
            .map_or(RCODES.len(), |b| ((b & 0x0f) as usize).min(RCODES.len()));
        self.responses[rcode] += 1;
        if let Some(code) = wire::extended_error(response) {
            let i = EDES.iter().position(|(c, _)| *c == code).unwrap_or(EDES.len());
            self.extended_errors[i] += 1;
        }
    }
}

/// Forward attempts at one upstream, by result ([`Metrics::forwards_to`]).
#[derive(Debug, Clone)]
pub struct ForwardCounters([Counter; 3]);

impl ForwardCounters {
    /// One attempt ended with `result`.
    pub fn count(&self, result: ForwardResult) {
        self.0[result as usize].inc();
    }
}

/// Every metric.
pub struct Metrics {
    registry: Registry,
    requests: [[Counter; QTYPES.len() + 1]; 2],
    responses: [[Counter; RCODES.len() + 1]; 2],
    extended_errors: [Counter; EDES.len() + 1],
    durations: [Durations; 2],
    forwards: Family<ForwardLabels, Counter>,
    forward_overload: Counter,
    table_hosts: Gauge,
    table_serial: Family<ZoneLabels, Gauge>,
    publish: Histogram,
    conflicts: Gauge,
    rejected: Family<ReasonLabels, Counter>,
    source_errors: Family<SourceErrorLabels, Counter>,
    cluster_synced: Family<ClusterLabels, Gauge>,
    cluster_stale: Family<ClusterLabels, Gauge>,
    cluster_entries: Family<ClusterLabels, Gauge>,
    cluster_last_event: Family<ClusterLabels, Gauge>,
    upstreams: UpstreamFamilies,
    transfers: Family<TransferLabels, Counter>,
    notifies: Family<NotifyLabels, Counter>,
    ready: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, in a registry of its own.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("globaldns");
        let requests_family = Family::<RequestLabels, Counter>::default();
        let responses_family = Family::<ResponseLabels, Counter>::default();
        let durations_family = Family::<PathLabels, Durations>::default();
        let protocols = ["udp", "tcp"];
        let types = QTYPES.iter().map(|(_, n)| *n).chain(["other"]).collect::<Vec<_>>();
        let rcodes = RCODES.iter().copied().chain(["other"]).collect::<Vec<_>>();
        let paths = ["authoritative", "forwarded"];
        let requests = protocols.map(|protocol| {
            std::array::from_fn(|i| {
                requests_family
                    .get_or_create(&RequestLabels {
                        protocol,
                        r#type: types[i],
                    })
                    .clone()
            })
        });
        let responses = paths.map(|path| {
            std::array::from_fn(|i| {
                responses_family
                    .get_or_create(&ResponseLabels { rcode: rcodes[i], path })
                    .clone()
            })
        });
        let durations = paths.map(|path| durations_family.get_or_create(&PathLabels { path }).clone());
        let edes_family = Family::<EdeLabels, Counter>::default();
        let extended_errors = std::array::from_fn(|i| {
            let code = EDES.get(i).map_or("other", |(_, code)| code);
            edes_family.get_or_create(&EdeLabels { code }).clone()
        });
        registry.register(
            "dns_extended_errors",
            "Responses carrying an Extended DNS Error (RFC 8914), by INFO-CODE: 3 stale answer, 14 not ready, 18 prohibited, 22 no reachable authority, 23 network error",
            edes_family,
        );
        registry.register(
            "dns_requests",
            "DNS queries received, by protocol and query type",
            requests_family,
        );
        registry.register(
            "dns_responses",
            "DNS responses sent, by rcode and by path",
            responses_family,
        );
        registry.register(
            "dns_answer_duration_seconds",
            "Time to answer a query, by path (UDP: the time its batch took)",
            durations_family,
        );
        let forwards = Family::default();
        let forward_overload = Counter::default();
        let table_hosts = Gauge::default();
        let table_serial = Family::<ZoneLabels, Gauge>::default();
        let publish = Histogram::new(durations::bounds());
        let conflicts = Gauge::default();
        let rejected = Family::default();
        let source_errors = Family::default();
        let cluster_synced = Family::default();
        let cluster_stale = Family::default();
        let cluster_entries = Family::default();
        let cluster_last_event = Family::default();
        registry.register("forwards", "Forward attempts, by upstream and result", forwards.clone());
        registry.register(
            "forwards_rejected",
            "Forwards refused with SERVFAIL: too many in flight",
            forward_overload.clone(),
        );
        registry.register("table_hosts", "Hosts in the published table", table_hosts.clone());
        registry.register(
            "table_serial",
            "SOA serial of each zone of the published table",
            table_serial.clone(),
        );
        registry.register(
            "table_publish_seconds",
            "Time to apply a batch of source changes and publish the table",
            publish.clone(),
        );
        registry.register(
            "table_conflicts",
            "Hosts with different addresses in different sources",
            conflicts.clone(),
        );
        registry.register(
            "entries_rejected",
            "ServiceEntries rejected, by reason",
            rejected.clone(),
        );
        // Every reason at 0 from the start: a healthy server exports the series that alerts and
        // dashboards select (an absent series is "no data", not 0).
        for reason in Reason::LABELS {
            let _ = rejected.get_or_create(&ReasonLabels { reason });
        }
        registry.register(
            "source_errors",
            "Failures of a cluster's watch (or its discovery), by cluster and kind of error",
            source_errors.clone(),
        );
        registry.register(
            "source_synced",
            "1 once a source has completed a full list",
            cluster_synced.clone(),
        );
        registry.register(
            "source_stale",
            "1 while a source serves its last known entries after losing its connection",
            cluster_stale.clone(),
        );
        registry.register("source_entries", "Entries a source serves", cluster_entries.clone());
        registry.register(
            "source_last_event_timestamp_seconds",
            "Unix time of a source's last event",
            cluster_last_event.clone(),
        );
        let upstreams = UpstreamFamilies::register(&mut registry);
        let transfers = Family::<TransferLabels, Counter>::default();
        registry.register(
            "transfers",
            "Zone transfers asked (AXFR over TCP, IXFR over either), by type (AXFR, IXFR) and result (full, incremental, current, refused, not_ready, not_auth, error, udp_soa)",
            transfers.clone(),
        );
        let notifies = Family::<NotifyLabels, Counter>::default();
        registry.register(
            "notifies",
            "NOTIFY messages, by result (sent, acknowledged, failed: no acknowledgement after every retry)",
            notifies.clone(),
        );
        for result in ["sent", "acknowledged", "failed"] {
            let _ = notifies.get_or_create(&NotifyLabels { result });
        }
        let ready = register_ready(&mut registry);
        Metrics {
            registry,
            requests,
            responses,
            extended_errors,
            durations,
            forwards,
            forward_overload,
            table_hosts,
            table_serial,
            publish,
            conflicts,
            rejected,
            source_errors,
            cluster_synced,
            cluster_stale,
            cluster_entries,
            cluster_last_event,
            upstreams,
            transfers,
            notifies,
            ready,
        }
    }

    /// A zone transfer request of `kind` (`AXFR`, `IXFR`) ended with `result`, answered by
    /// `first` (its first message; none when the answer could not be built) after `took`.
    /// The answer counts as one response of the authoritative path, by its rcode and its
    /// Extended DNS Error, as every other path's do: a transfer's messages all carry one
    /// rcode (RFC 5936 §2.2), so the many messages of a whole zone are one response.
    pub fn transfer(&self, kind: &'static str, result: &'static str, first: Option<&[u8]>, took: Duration) {
        self.transfers
            .get_or_create(&TransferLabels { r#type: kind, result })
            .inc();
        if let Some(response) = first {
            let mut tally = Tally::default();
            tally.response(response);
            self.add(Transport::Tcp, Path::Authoritative, &mut tally, took);
        }
    }

    /// A NOTIFY was `sent`, `acknowledged`, or `failed` (no acknowledgement after every retry).
    pub fn notify(&self, result: &'static str) {
        self.notifies.get_or_create(&NotifyLabels { result }).inc();
    }

    /// Adds what `tally` counted (queries received over `transport`, responses made on `path`)
    /// and clears it; each response took `took`.
    pub fn add(&self, transport: Transport, path: Path, tally: &mut Tally, took: Duration) {
        for (counter, n) in self.requests[transport as usize].iter().zip(&mut tally.requests) {
            if *n > 0 {
                counter.inc_by(std::mem::take(n));
            }
        }
        let mut responses = 0;
        for (counter, n) in self.responses[path as usize].iter().zip(&mut tally.responses) {
            if *n > 0 {
                responses += *n;
                counter.inc_by(std::mem::take(n));
            }
        }
        if responses > 0 {
            self.durations[path as usize].observe(took, responses);
        }
        for (counter, n) in self.extended_errors.iter().zip(&mut tally.extended_errors) {
            if *n > 0 {
                counter.inc_by(std::mem::take(n));
            }
        }
    }

    /// The counters of forward attempts at `upstream`, to keep: made once per upstream, so
    /// that counting an attempt is one atomic add.
    pub fn forwards_to(&self, upstream: std::net::SocketAddr) -> ForwardCounters {
        let upstream = upstream.to_string();
        ForwardCounters(["answer", "timeout", "error"].map(|result| {
            self.forwards
                .get_or_create(&ForwardLabels {
                    upstream: upstream.clone(),
                    result,
                })
                .clone()
        }))
    }

    /// A forward was refused: too many in flight.
    pub fn forward_overload(&self) {
        self.forward_overload.inc();
    }

    /// A table was published.
    pub fn table(&self, table: &crate::table::Table, took: Duration) {
        self.publish.observe(took.as_secs_f64());
        self.table_hosts.set(table.host_count() as i64);
        self.serials(table);
        self.conflicts.set(table.conflict_count() as i64);
    }

    /// Each zone's serial in `table` (also when only serials changed: a pending change sealed).
    pub fn serials(&self, table: &crate::table::Table) {
        for (zone, serial) in table.serials() {
            let zone = ZoneLabels { zone: zone.into() };
            self.table_serial.get_or_create(&zone).set(i64::from(serial));
        }
    }

    /// An entry was rejected for `reason`, counted by its [`Reason::label`].
    pub fn rejected(&self, reason: &Reason) {
        self.rejected
            .get_or_create(&ReasonLabels { reason: reason.label() })
            .inc();
    }

    /// A source failed with an error of kind `error` (a label from a fixed set:
    /// `sources::Error::metric_label`).
    pub fn source_error(&self, cluster: &str, error: &'static str) {
        self.source_errors
            .get_or_create(&SourceErrorLabels {
                cluster: cluster.to_owned(),
                error,
            })
            .inc();
    }

    /// Prometheus text of every metric, the sources' gauges set from `sources` first.
    pub fn encode(&self, sources: &[SourceStatus]) -> String {
        for family in [
            &self.cluster_synced,
            &self.cluster_stale,
            &self.cluster_entries,
            &self.cluster_last_event,
        ] {
            family.clear();
        }
        for s in sources {
            let l = ClusterLabels {
                cluster: s.name.to_string(),
            };
            self.cluster_synced.get_or_create(&l).set(i64::from(s.synced));
            self.cluster_stale.get_or_create(&l).set(i64::from(s.stale));
            self.cluster_entries.get_or_create(&l).set(s.entries as i64);
            if let Some(t) = s.last_event {
                self.cluster_last_event.get_or_create(&l).set(t as i64);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

// Upstream health (forwarding): state, probes, fast failures.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

/// The families of [`UpstreamHealth`].
#[derive(Debug)]
struct UpstreamFamilies {
    up: Family<UpstreamLabels, Gauge>,
    probes: Family<ForwardLabels, Counter>,
    fast_failures: Counter,
}

impl UpstreamFamilies {
    fn register(registry: &mut Registry) -> Self {
        let families = UpstreamFamilies {
            up: Family::default(),
            probes: Family::default(),
            fast_failures: Counter::default(),
        };
        registry.register(
            "forward_upstream_up",
            "1 while an upstream takes queries, 0 while it is down (probed until it answers)",
            families.up.clone(),
        );
        registry.register(
            "forward_probes",
            "Probes (. IN NS) of upstreams that are down, by upstream and result",
            families.probes.clone(),
        );
        registry.register(
            "forward_fast_failures",
            "Forwards answered SERVFAIL at once, without an attempt: no upstream was up",
            families.fast_failures.clone(),
        );
        families
    }
}

/// One upstream's health metrics ([`Metrics::upstream_health`]).
#[derive(Debug, Clone)]
pub struct UpstreamHealth {
    up: Gauge,
    probes: [Counter; 3],
}

impl UpstreamHealth {
    /// The upstream is now up (`true`) or down.
    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    /// A probe ended with `result`.
    pub fn probe(&self, result: ForwardResult) {
        self.probes[result as usize].inc();
    }
}

impl Metrics {
    /// The health metrics of `upstream`, to keep (made once per upstream); it starts up.
    pub fn upstream_health(&self, upstream: std::net::SocketAddr) -> UpstreamHealth {
        let upstream = upstream.to_string();
        let up = self.upstreams.up.get_or_create(&UpstreamLabels {
            upstream: upstream.clone(),
        });
        up.set(1);
        UpstreamHealth {
            up: up.clone(),
            probes: ["answer", "timeout", "error"].map(|result| {
                self.upstreams
                    .probes
                    .get_or_create(&ForwardLabels {
                        upstream: upstream.clone(),
                        result,
                    })
                    .clone()
            }),
        }
    }

    /// A forward got SERVFAIL at once, without an attempt: no upstream was up.
    pub fn forward_fast_failure(&self) {
        self.upstreams.fast_failures.inc();
    }
}

// Readiness: what `/readyz` answers, set by the registry whenever it publishes the status.

fn register_ready(registry: &mut Registry) -> Gauge {
    let ready = Gauge::default();
    registry.register(
        "ready",
        "1 while /readyz answers 200 (every source synced once, a remote cluster past --sync-timeout excepted), else 0",
        ready.clone(),
    );
    ready
}

impl Metrics {
    /// The server is now ready (`true`: `/readyz` answers 200) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_counted_by_the_label_of_their_reason() {
        let m = Metrics::new();
        m.rejected(&Reason::MissingField("spec.hosts"));
        m.rejected(&Reason::MissingField("spec"));
        m.rejected(&Reason::Address("x".into()));
        let text = m.encode(&[]);
        assert!(
            text.contains("globaldns_entries_rejected_total{reason=\"missing_field\"} 2"),
            "{text}"
        );
        assert!(text.contains("globaldns_entries_rejected_total{reason=\"address\"} 1"));
        assert!(
            text.contains("globaldns_entries_rejected_total{reason=\"host\"} 0"),
            "spec.hosts missing is no bad host: {text}"
        );
    }

    #[test]
    fn rejections_and_notifies_are_exported_at_zero_before_any() {
        let text = Metrics::new().encode(&[]);
        for reason in Reason::LABELS {
            let series = format!("globaldns_entries_rejected_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&series), "{series}\n{text}");
        }
        for result in ["sent", "acknowledged", "failed"] {
            let series = format!("globaldns_notifies_total{{result=\"{result}\"}} 0");
            assert!(text.contains(&series), "{series}\n{text}");
        }
    }

    #[test]
    fn extended_errors_are_counted_by_code() {
        let m = Metrics::new();
        let mut tally = Tally::default();
        // A header with one additional record, then an OPT ending in an EDE option.
        let with = |code: u16| {
            let mut reply = vec![0, 0, 0x81, 0x82, 0, 0, 0, 0, 0, 0, 0, 1];
            reply.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 6, 0, 15, 0, 2]);
            reply.extend_from_slice(&code.to_be_bytes());
            reply
        };
        for code in [3, 3, 22, 99] {
            tally.response(&with(code));
        }
        // An OPT without options, as most replies end: none.
        tally.response(&[
            0, 0, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0,
        ]);
        m.add(Transport::Udp, Path::Authoritative, &mut tally, Duration::ZERO);
        let text = m.encode(&[]);
        for (code, n) in [("3", 2), ("22", 1), ("other", 1), ("14", 0)] {
            let series = format!("globaldns_dns_extended_errors_total{{code=\"{code}\"}} {n}");
            assert!(text.contains(&series), "{series} in {text}");
        }
    }

    #[test]
    fn encodes_with_the_prefix_and_bounded_labels() {
        let m = Metrics::new();
        let mut tally = Tally::default();
        tally.request(Some(28));
        tally.response(&[0, 0, 0x84, 0x03]);
        m.add(
            Transport::Udp,
            Path::Authoritative,
            &mut tally,
            Duration::from_micros(5),
        );
        assert_eq!(
            (tally.requests, tally.responses),
            Default::default(),
            "added and cleared"
        );
        tally.request(Some(4242));
        m.add(Transport::Tcp, Path::Authoritative, &mut tally, Duration::ZERO);
        let text = m.encode(&[]);
        assert!(
            text.contains("globaldns_dns_requests_total{protocol=\"udp\",type=\"AAAA\"}"),
            "{text}"
        );
        assert!(text.contains("globaldns_dns_requests_total{protocol=\"tcp\",type=\"other\"}"));
        assert!(text.contains("globaldns_dns_responses_total{rcode=\"NXDOMAIN\",path=\"authoritative\"}"));
        assert!(text.contains("globaldns_dns_answer_duration_seconds_bucket"));
    }
}
