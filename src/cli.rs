//! The command line (DESIGN.md "Command line": a contract, names do not change).
//!
//! Every option also reads `GLOBALDNS_<NAME>` from the environment; repeatable options take
//! comma-separated values there (`GLOBALDNS_ZONE=global,mesh.internal`). Parsed once at
//! start-up and validated into typed settings with readable errors.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use thiserror::Error;

use crate::app::{ServeConfig, Sources};
use crate::dns::batch::to_std;
use crate::dns::forward::{self, BadUpstream, ForwardSettings};
use crate::dns::server::{Limits, is_dual_stack};
use crate::dns::transfer::TransferSettings;
use crate::table::{AutoAllocate, ExportMode, SettingsError, TableSettings};
use ipnet::IpNet;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "globaldns",
    version,
    about = "Authoritative DNS for .global names from Istio ServiceEntries"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, env = "GLOBALDNS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve DNS.
    Serve(ServeArgs),
    /// Validate ServiceEntry files and print the table they give; exit 1 if an entry is invalid.
    Check(CheckArgs),
    /// Print the current table from the sources, as a zone file or JSON.
    Records(RecordsArgs),
    /// Say why a running server answers a name as it does (asks its admin endpoint).
    Explain(ExplainArgs),
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options that shape the table.
#[derive(Debug, Args)]
pub struct TableArgs {
    /// Zone served authoritatively, repeatable.
    #[arg(
        long = "zone",
        env = "GLOBALDNS_ZONE",
        value_delimiter = ',',
        default_value = "global"
    )]
    pub zones: Vec<String>,
    /// TTL of answers, in seconds.
    #[arg(long, env = "GLOBALDNS_TTL", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=2_147_483_647))]
    pub ttl: u32,
    /// SOA MINIMUM of every zone, the TTL of negative answers (when below --ttl), in seconds.
    #[arg(long, env = "GLOBALDNS_NEGATIVE_TTL", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=2_147_483_647))]
    pub negative_ttl: u32,
    /// Addresses for entries that have none: Istio 1.17–1.24's allocation (`istio-legacy`).
    #[arg(long, env = "GLOBALDNS_AUTO_ALLOCATE", value_enum, default_value_t = AutoAllocateArg::None)]
    pub auto_allocate: AutoAllocateArg,
    /// Address for entries that have none (the old plugin's flag).
    #[arg(long, env = "GLOBALDNS_DEFAULT_ADDRESS")]
    pub default_address: Option<IpAddr>,
    /// Do not serve resolution NONE entries (the old plugin's behaviour).
    #[arg(long, env = "GLOBALDNS_SKIP_RESOLUTION_NONE")]
    pub skip_resolution_none: bool,
    /// Which entries exportTo lets us serve.
    #[arg(long, env = "GLOBALDNS_EXPORT_TO", value_enum, default_value_t = ExportToArg::Mesh)]
    pub export_to: ExportToArg,
}

/// `--export-to`: the command line's names for [`ExportMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportToArg {
    /// Entries visible mesh-wide: empty `exportTo` or one containing `*`.
    Mesh,
    /// Every entry except those exported to `~` (nowhere).
    All,
}

impl From<ExportToArg> for ExportMode {
    fn from(arg: ExportToArg) -> Self {
        match arg {
            ExportToArg::Mesh => ExportMode::Mesh,
            ExportToArg::All => ExportMode::All,
        }
    }
}

/// `--auto-allocate`: the command line's names for [`AutoAllocate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AutoAllocateArg {
    /// No allocation: `--default-address`, else no address.
    None,
    /// Istio 1.17–1.24's hash allocation, bit for bit, per source.
    IstioLegacy,
}

impl From<AutoAllocateArg> for AutoAllocate {
    fn from(arg: AutoAllocateArg) -> Self {
        match arg {
            AutoAllocateArg::None => AutoAllocate::None,
            AutoAllocateArg::IstioLegacy => AutoAllocate::IstioLegacy,
        }
    }
}

impl TableArgs {
    /// Validated table settings.
    ///
    /// # Errors
    ///
    /// A [`SettingsError`] when a `--zone` is not a domain name or is the root, or no zone is
    /// given ([`TableSettings::new`]).
    pub fn settings(&self) -> Result<TableSettings, SettingsError> {
        let mut settings = TableSettings::new(&self.zones)?;
        settings.ttl = self.ttl;
        settings.negative_ttl = self.negative_ttl;
        settings.export = self.export_to.into();
        settings.skip_resolution_none = self.skip_resolution_none;
        settings.default_address = self.default_address;
        settings.auto_allocate = self.auto_allocate.into();
        Ok(settings)
    }
}

/// Where entries come from.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// ServiceEntry YAML file or directory, repeatable, watched.
    #[arg(long, env = "GLOBALDNS_ENTRIES", value_delimiter = ',')]
    pub entries: Vec<PathBuf>,
    /// kubeconfig for --context [default: $KUBECONFIG, then ~/.kube/config].
    #[arg(long, env = "GLOBALDNS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// A cluster to watch, named after its context, repeatable; the first is the local cluster.
    #[arg(long = "context", env = "GLOBALDNS_CONTEXT", value_delimiter = ',')]
    pub contexts: Vec<String>,
    /// Watch the cluster this pod runs in (the local cluster).
    #[arg(long, env = "GLOBALDNS_IN_CLUSTER")]
    pub in_cluster: bool,
    /// The local cluster's ID when --in-cluster.
    #[arg(long, env = "GLOBALDNS_CLUSTER_NAME", default_value = "local")]
    pub cluster_name: String,
    /// Discover clusters from istio/multiCluster=true Secrets in this namespace of the local cluster.
    #[arg(long, env = "GLOBALDNS_REMOTE_SECRETS")]
    pub remote_secrets: Option<String>,
    /// A remote cluster that has not synced by then no longer holds readiness back.
    #[arg(long, env = "GLOBALDNS_SYNC_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub sync_timeout: Duration,
}

/// `globaldns serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// DNS over UDP and TCP, repeatable; `[::]` is dual-stack unless an IPv4 address has its
    /// port too [default: `[::]:53` dual-stack, else `0.0.0.0:53` where the host has no IPv6].
    #[arg(
        long,
        env = "GLOBALDNS_LISTEN",
        value_delimiter = ',',
        default_value = "[::]:53",
        hide_default_value = true
    )]
    pub listen: Vec<SocketAddr>,
    /// HTTP: /healthz /readyz /metrics /debug/*.
    #[arg(long, env = "GLOBALDNS_ADMIN", default_value = "0.0.0.0:8080")]
    pub admin: SocketAddr,
    /// UDP sockets on each --listen address (SO_REUSEPORT), each served by a thread of its own
    /// [default: one per CPU the process may use].
    #[arg(long, env = "GLOBALDNS_UDP_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub udp_threads: Option<u16>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub table: TableArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub sources: SourceArgs,
    /// Clients allowed AXFR/IXFR (a CIDR, or an IP), repeatable; others are REFUSED [default: none].
    #[arg(long = "transfer-to", env = "GLOBALDNS_TRANSFER_TO", value_delimiter = ',')]
    pub transfer_to: Vec<String>,
    /// Secondary to NOTIFY when a zone's serial changes, IP or IP:PORT (53 by default), repeatable.
    #[arg(long = "notify", env = "GLOBALDNS_NOTIFY", value_delimiter = ',')]
    pub notify: Vec<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub forward: ForwardArgs,
}

/// Forwarding of names outside the served zones.
#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// IP or IP:PORT for other names, repeatable (a link-local IPv6 address with its interface:
    /// `fe80::1%eth0`, `[fe80::1%eth0]:53`) [default: nameservers of /etc/resolv.conf].
    #[arg(long = "upstream", env = "GLOBALDNS_UPSTREAM", value_delimiter = ',')]
    pub upstreams: Vec<String>,
    /// Time for one attempt at one upstream (`800ms`, `1s`).
    #[arg(long, env = "GLOBALDNS_UPSTREAM_TIMEOUT", default_value = "800ms", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// Total time for a forwarded query, failover included, before SERVFAIL (within the 2 s
    /// CoreDNS's `forward` waits).
    #[arg(long, env = "GLOBALDNS_FORWARD_TIMEOUT", default_value = "1800ms", value_parser = parse_duration)]
    pub forward_timeout: Duration,
    /// Forwarded queries in flight at most; beyond, SERVFAIL at once.
    #[arg(long, env = "GLOBALDNS_MAX_FORWARDS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_forwards: u32,
}

/// Parses `250ms`, `2s` or `1.5s`.
///
/// # Errors
///
/// A message naming `text` when it has no `ms` or `s` unit, its number does not parse, or
/// the duration is not above zero and at most an hour (clap prints it as the flag's error).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 500ms or 2s");
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        return Err(bad());
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value <= 0.0 || value * scale > 3600.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// `globaldns check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// ServiceEntry YAML files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub table: TableArgs,
}

/// Output formats of `records`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A zone file (RFC 1035 master format).
    Zone,
    /// JSON, with where each address came from.
    Json,
}

/// `globaldns records`.
#[derive(Debug, Args)]
pub struct RecordsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub table: TableArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub sources: SourceArgs,
    /// Output format.
    #[arg(long, env = "GLOBALDNS_FORMAT", value_enum, default_value_t = Format::Zone)]
    pub format: Format,
}

/// `globaldns explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The name asked (`httpbin.bar.global`, `_http._tcp.httpbin.bar.global`,
    /// `2.0.0.240.in-addr.arpa`).
    pub name: String,
    /// The query type: a name (A, AAAA, SRV, PTR, ANY, …) or a number.
    #[arg(long = "type", env = "GLOBALDNS_TYPE", default_value = "A")]
    pub qtype: String,
    /// The running server's admin endpoint, HOST:PORT as `serve --admin` takes it (a wildcard
    /// address reaches the server on this host).
    #[arg(long, env = "GLOBALDNS_ADMIN", default_value = "127.0.0.1:8080")]
    pub admin: SocketAddr,
}

/// A command line that parses but cannot be served.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Table settings.
    #[error(transparent)]
    Table(#[from] SettingsError),
    /// Nothing to serve.
    #[error("no sources: give --entries PATH, --context NAME or --in-cluster")]
    NoSources,
    /// Remote secrets need a local cluster to read them from.
    #[error("--remote-secrets needs a local cluster: give --in-cluster or --context")]
    RemoteSecretsWithoutLocal,
    /// A bad `--upstream`.
    #[error(transparent)]
    Upstream(#[from] BadUpstream),
    /// No `--upstream` and none in resolv.conf.
    #[error("no upstream for names outside the served zones: /etc/resolv.conf {0}; give --upstream IP")]
    NoUpstream(String),
    /// An upstream that is this very server would loop.
    #[error("--upstream {upstream} is this server's own --listen {listen}: queries would loop")]
    UpstreamIsSelf {
        /// The upstream.
        upstream: SocketAddr,
        /// The listening address it reaches.
        listen: SocketAddr,
    },
    /// A `--transfer-to` that is neither a CIDR nor an IP.
    #[error("--transfer-to {0:?} is neither a CIDR (10.0.0.0/8, fd00::/8) nor an IP")]
    TransferTo(String),
    /// A `--notify` that is neither IP nor IP:PORT.
    #[error("--notify {0:?} is neither IP nor IP:PORT")]
    Notify(String),
    /// A listening address given twice, or one that a wildcard address already covers.
    #[error("--listen {addr} is already served by --listen {by}")]
    ListenCovered {
        /// The address.
        addr: SocketAddr,
        /// The address that covers it.
        by: SocketAddr,
    },
}

impl ForwardArgs {
    /// Forward settings, upstreams from the flags or from `resolv_conf` (its text, or why it
    /// could not be read); none may reach one of the `listen` addresses (a wildcard one on
    /// loopback or on one of `host_ips`, this host's addresses, asked only then).
    ///
    /// # Errors
    ///
    /// - [`ConfigError::Upstream`] when an `--upstream` is not a usable IP or IP:PORT
    ///   ([`parse_upstream`](forward::parse_upstream));
    /// - [`ConfigError::NoUpstream`] when no `--upstream` is given and `resolv_conf` fails or
    ///   lists no nameserver that can be dialled (saying so when it skipped some);
    /// - [`ConfigError::UpstreamIsSelf`] when an upstream reaches one of the `listen` addresses.
    pub fn settings(
        &self,
        listen: &[SocketAddr],
        resolv_conf: impl FnOnce() -> Result<String, String>,
        host_ips: impl FnOnce() -> Vec<IpAddr>,
    ) -> Result<ForwardSettings, ConfigError> {
        let upstreams = if self.upstreams.is_empty() {
            let text = resolv_conf().map_err(ConfigError::NoUpstream)?;
            let found = forward::resolv_conf_nameservers(&text);
            if found.is_empty() {
                // Lines it does list may have been skipped (an unknown interface; a link-local
                // address without one), each with a warning of its own.
                let why = if forward::resolv_conf_nameserver_words(&text).next().is_some() {
                    "lists no nameserver that can be dialled (the skipped ones are logged above)"
                } else {
                    "lists no nameserver"
                };
                return Err(ConfigError::NoUpstream(why.into()));
            }
            found
        } else {
            self.upstreams
                .iter()
                .map(|u| forward::parse_upstream(u))
                .collect::<Result<_, _>>()?
        };
        let mut host_ips = Some(host_ips);
        let mut host = Vec::new();
        for &upstream in &upstreams {
            for &addr in listen {
                if addr.ip().is_unspecified()
                    && addr.port() == upstream.port()
                    && let Some(ask) = host_ips.take()
                {
                    host = ask();
                }
                if reaches(upstream, addr, listen, &host) {
                    return Err(ConfigError::UpstreamIsSelf { upstream, listen: addr });
                }
            }
        }
        Ok(ForwardSettings {
            upstreams,
            attempt_timeout: self.upstream_timeout.min(self.forward_timeout),
            budget: self.forward_timeout,
            max_in_flight: self.max_forwards as usize,
        })
    }
}

impl SourceArgs {
    /// The validated sources.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::NoSources`] when neither `--entries`, `--context` nor `--in-cluster`
    ///   is given;
    /// - [`ConfigError::RemoteSecretsWithoutLocal`] when `--remote-secrets` is given without a
    ///   local cluster (`--in-cluster` or `--context`).
    pub fn sources(&self) -> Result<Sources, ConfigError> {
        let has_local = self.in_cluster || !self.contexts.is_empty();
        if self.entries.is_empty() && !has_local {
            return Err(ConfigError::NoSources);
        }
        if self.remote_secrets.is_some() && !has_local {
            return Err(ConfigError::RemoteSecretsWithoutLocal);
        }
        Ok(Sources {
            entries: self.entries.clone(),
            kubeconfig: self.kubeconfig.clone(),
            contexts: self.contexts.clone(),
            in_cluster: self.in_cluster.then(|| self.cluster_name.clone()),
            remote_secrets: self.remote_secrets.clone(),
            sync_timeout: self.sync_timeout,
        })
    }
}

/// Whether a query sent to `upstream` reaches a server listening on `listen`, one of `all`: the
/// same address, or a wildcard's port at an address of its families (`0.0.0.0` IPv4, `[::]`
/// IPv6 and, dual-stack, IPv4) on this host: loopback, the wildcard itself or one of `host`.
fn reaches(upstream: SocketAddr, listen: SocketAddr, all: &[SocketAddr], host: &[IpAddr]) -> bool {
    let ip = upstream.ip().to_canonical();
    if upstream.port() != listen.port() {
        return false;
    }
    if !listen.ip().is_unspecified() {
        return ip == listen.ip().to_canonical();
    }
    let family = if ip.is_ipv4() {
        listen.is_ipv4() || is_dual_stack(listen, all)
    } else {
        listen.is_ipv6()
    };
    family && (ip.is_loopback() || ip.is_unspecified() || host.contains(&ip))
}

/// The `--listen` addresses, each once and none on the port of a wildcard address of its
/// family (which serves it already; binding both would fail).
fn listen_addresses(addrs: &[SocketAddr]) -> Result<Vec<SocketAddr>, ConfigError> {
    for (i, &addr) in addrs.iter().enumerate() {
        for (j, &by) in addrs.iter().enumerate() {
            let covers = by.ip().is_unspecified()
                && by.is_ipv4() == addr.is_ipv4()
                && by.port() == addr.port()
                && by.port() != 0;
            if i != j && (addr == by && i > j || addr != by && covers) {
                return Err(ConfigError::ListenCovered { addr, by });
            }
        }
    }
    Ok(addrs.to_vec())
}

/// This host's addresses (getifaddrs(3)); none when they cannot be listed.
fn host_ips() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    interfaces
        .filter_map(|i| i.address.as_ref().and_then(to_std))
        .map(|a| a.ip().to_canonical())
        .collect()
}

impl ServeArgs {
    /// The validated configuration of `serve`; reads `/etc/resolv.conf` when no `--upstream`
    /// is given.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::ListenCovered`] when a `--listen` address is given twice or a
    ///   wildcard address of its family and port already serves it;
    /// - [`ConfigError::Table`] as [`TableArgs::settings`];
    /// - [`ConfigError::NoSources`], [`ConfigError::RemoteSecretsWithoutLocal`] as
    ///   [`SourceArgs::sources`];
    /// - [`ConfigError::Upstream`], [`ConfigError::NoUpstream`], [`ConfigError::UpstreamIsSelf`]
    ///   as [`ForwardArgs::settings`];
    /// - [`ConfigError::TransferTo`] when a `--transfer-to` is neither a CIDR nor an IP;
    ///   [`ConfigError::Notify`] when a `--notify` is neither IP nor IP:PORT.
    pub fn config(&self) -> Result<ServeConfig, ConfigError> {
        let listen = listen_addresses(&self.listen)?;
        Ok(ServeConfig {
            admin: Some(self.admin),
            table: self.table.settings()?,
            sources: self.sources.sources()?,
            limits: Limits {
                udp_sockets: self.udp_threads.map_or(Limits::default().udp_sockets, usize::from),
                ..Limits::default()
            },
            forward: Some(self.forward.settings(
                &listen,
                || std::fs::read_to_string("/etc/resolv.conf").map_err(|e| format!("cannot be read ({e})")),
                host_ips,
            )?),
            transfer: self.transfer_settings()?,
            listen,
        })
    }

    /// `--transfer-to` and `--notify`, parsed.
    fn transfer_settings(&self) -> Result<TransferSettings, ConfigError> {
        let allow = self
            .transfer_to
            .iter()
            .map(|t| {
                t.parse::<IpNet>()
                    .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| ConfigError::TransferTo(t.clone()))
            })
            .collect::<Result<_, _>>()?;
        let notify = self
            .notify
            .iter()
            .map(|n| forward::parse_upstream(n).map_err(|_| ConfigError::Notify(n.clone())))
            .collect::<Result<_, _>>()?;
        Ok(TransferSettings { allow, notify })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn serve(args: &[&str]) -> Result<ServeConfig, String> {
        let cli = Cli::try_parse_from(
            [
                "globaldns",
                "serve",
                "--upstream",
                "127.0.0.1:5300",
                "--entries",
                "deploy/examples",
            ]
            .iter()
            .chain(args),
        )
        .map_err(|e| e.to_string())?;
        let Command::Serve(serve) = cli.command else {
            unreachable!("serve parsed")
        };
        serve.config().map_err(|e| e.to_string())
    }

    #[test]
    fn export_to_and_auto_allocate_map_onto_the_table_settings() {
        let defaults = serve(&[]).unwrap().table;
        assert_eq!(
            (defaults.export, defaults.auto_allocate),
            (ExportMode::Mesh, AutoAllocate::None)
        );
        let given = serve(&["--export-to", "all", "--auto-allocate", "istio-legacy"])
            .unwrap()
            .table;
        assert_eq!(
            (given.export, given.auto_allocate),
            (ExportMode::All, AutoAllocate::IstioLegacy)
        );
        let bad = serve(&["--export-to", "nowhere"]).unwrap_err();
        assert!(bad.contains("[possible values: mesh, all]"), "{bad}");
    }

    #[test]
    fn forwarding_defaults_answer_within_two_seconds() {
        let forward = serve(&[]).unwrap().forward.unwrap();
        assert_eq!(forward.attempt_timeout, Duration::from_millis(800));
        assert_eq!(forward.budget, Duration::from_millis(1800));
        assert!(
            forward.budget < Duration::from_secs(2),
            "CoreDNS's forward reads for 2 s"
        );
    }

    #[test]
    fn a_link_local_upstream_keeps_its_interface() {
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        for flag in ["[fe80::1%lo]:53", "fe80::1%lo"] {
            let forward = serve(&["--upstream", flag]).unwrap().forward.unwrap();
            let std::net::SocketAddr::V6(v6) = forward.upstreams[1] else {
                panic!("{flag}: IPv6")
            };
            assert_eq!((v6.scope_id(), v6.port()), (lo, 53), "{flag}");
        }
        let bad = serve(&["--upstream", "fe80::1%no-such-if0"]).unwrap_err();
        assert!(bad.contains("no-such-if0"), "{bad}");
    }

    #[test]
    fn udp_threads_default_to_the_cpus_and_can_be_set() {
        assert_eq!(serve(&[]).unwrap().limits.udp_sockets, Limits::default().udp_sockets);
        assert_eq!(serve(&["--udp-threads", "3"]).unwrap().limits.udp_sockets, 3);
        let zero = serve(&["--udp-threads", "0"]).unwrap_err();
        assert!(zero.contains("--udp-threads"), "{zero}");
    }

    fn addrs(text: &[&str]) -> Vec<SocketAddr> {
        text.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn listen_is_repeatable_and_defaults_to_the_dual_stack_wildcard() {
        assert_eq!(serve(&[]).unwrap().listen, addrs(&["[::]:53"]));
        let both = serve(&["--listen", "0.0.0.0:53", "--listen", "[::]:53"]).unwrap();
        assert_eq!(both.listen, addrs(&["0.0.0.0:53", "[::]:53"]));
        // Comma-separated, as GLOBALDNS_LISTEN takes them (clap splits both alike).
        let listed = serve(&["--listen", "127.0.0.1:53,[::1]:53"]).unwrap();
        assert_eq!(listed.listen, addrs(&["127.0.0.1:53", "[::1]:53"]));
    }

    #[test]
    fn an_address_served_twice_is_refused() {
        for (given, said) in [
            (
                ["127.0.0.1:53", "127.0.0.1:53"],
                "--listen 127.0.0.1:53 is already served by --listen 127.0.0.1:53",
            ),
            (
                ["0.0.0.0:53", "127.0.0.2:53"],
                "--listen 127.0.0.2:53 is already served by --listen 0.0.0.0:53",
            ),
            (
                ["[::1]:53", "[::]:53"],
                "--listen [::1]:53 is already served by --listen [::]:53",
            ),
        ] {
            let e = serve(&["--listen", given[0], "--listen", given[1]]).unwrap_err();
            assert_eq!(e, said);
        }
        for fine in [
            ["127.0.0.1:53", "[::]:53"],
            ["0.0.0.0:53", "[::1]:53"],
            ["127.0.0.1:0", "127.0.0.2:0"],
        ] {
            assert!(serve(&["--listen", fine[0], "--listen", fine[1]]).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn a_resolv_conf_whose_nameservers_cannot_be_dialled_says_so() {
        let args = ForwardArgs {
            upstreams: vec![],
            upstream_timeout: Duration::from_secs(1),
            forward_timeout: Duration::from_secs(2),
            max_forwards: 8,
        };
        let error = |text: &str| {
            let text = text.to_owned();
            args.settings(&addrs(&["127.0.0.1:5300"]), move || Ok(text), Vec::new)
                .map(drop)
                .unwrap_err()
                .to_string()
        };
        let skipped = error("nameserver fe80::1\nnameserver fe80::1%nosuch9\n");
        assert!(skipped.contains("lists no nameserver that can be dialled"), "{skipped}");
        let none = error("search svc.cluster.local\noptions ndots:5\n");
        assert!(none.contains("lists no nameserver;"), "{none}");
    }

    #[test]
    fn an_upstream_that_is_a_listening_address_loops() {
        let host = [IpAddr::from([10, 0, 0, 5]), "fd00::5".parse().unwrap()];
        let check = |listen: &[&str], upstream: &str| {
            let args = ForwardArgs {
                upstreams: vec![upstream.into()],
                upstream_timeout: Duration::from_secs(1),
                forward_timeout: Duration::from_secs(2),
                max_forwards: 8,
            };
            args.settings(&addrs(listen), || Ok(String::new()), || host.to_vec())
                .map(drop)
                .map_err(|e| e.to_string())
        };
        for (listen, upstream) in [
            (&["127.0.0.1:5300"][..], "127.0.0.1:5300"),
            (&["127.0.0.2:53", "[::1]:53"][..], "::1"),
            (&["0.0.0.0:53"][..], "127.0.0.53"),
            (&["0.0.0.0:53"][..], "10.0.0.5"),
            (&["[::]:53"][..], "127.0.0.1"),
            (&["[::]:53"][..], "[::ffff:127.0.0.1]:53"),
            (&["[::]:53"][..], "fd00::5"),
            (&["127.0.0.1:5300", "[::]:53"][..], "10.0.0.5"),
        ] {
            let e = check(listen, upstream).unwrap_err();
            assert!(e.contains("queries would loop"), "{listen:?} {upstream}: {e}");
        }
        for (listen, upstream) in [
            (&["127.0.0.1:5300"][..], "127.0.0.2:5300"),
            (&["0.0.0.0:53"][..], "::1"),
            (&["0.0.0.0:53"][..], "10.0.0.6"),
            (&["[::]:53"][..], "127.0.0.1:5353"),
            (&["[::]:53"][..], "10.96.0.10"),
            (&["127.0.0.1:53", "[::]:53"][..], "10.0.0.5"),
        ] {
            assert_eq!(check(listen, upstream), Ok(()), "{listen:?} {upstream}");
        }
    }
}
