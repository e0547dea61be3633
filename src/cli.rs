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

use crate::app::ServeConfig;
use crate::dns::server::Limits;
use crate::table::{ExportMode, SettingsError, TableSettings};

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
    /// Address for entries that have none (the old plugin's flag).
    #[arg(long, env = "GLOBALDNS_DEFAULT_ADDRESS")]
    pub default_address: Option<IpAddr>,
    /// Do not serve resolution NONE entries (the old plugin's behaviour).
    #[arg(long, env = "GLOBALDNS_SKIP_RESOLUTION_NONE")]
    pub skip_resolution_none: bool,
    /// Which entries exportTo lets us serve.
    #[arg(long, env = "GLOBALDNS_EXPORT_TO", value_enum, default_value_t = ExportMode::Mesh)]
    pub export_to: ExportMode,
}

impl TableArgs {
    /// Validated table settings.
    pub fn settings(&self) -> Result<TableSettings, SettingsError> {
        let mut settings = TableSettings::new(&self.zones)?;
        settings.ttl = self.ttl;
        settings.export = self.export_to;
        settings.skip_resolution_none = self.skip_resolution_none;
        settings.default_address = self.default_address;
        Ok(settings)
    }
}

/// Where entries come from.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// ServiceEntry YAML file or directory, repeatable, watched.
    #[arg(long, env = "GLOBALDNS_ENTRIES", value_delimiter = ',')]
    pub entries: Vec<PathBuf>,
}

/// `globaldns serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// DNS over UDP and TCP.
    #[arg(long, env = "GLOBALDNS_LISTEN", default_value = "0.0.0.0:53")]
    pub listen: SocketAddr,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub table: TableArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub sources: SourceArgs,
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

/// A command line that parses but cannot be served.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Table settings.
    #[error(transparent)]
    Table(#[from] SettingsError),
    /// Nothing to serve.
    #[error("no sources: give --entries PATH (a ServiceEntry file or directory)")]
    NoSources,
}

impl SourceArgs {
    /// Checks that at least one source is given.
    pub fn require_any(&self) -> Result<(), ConfigError> {
        if self.entries.is_empty() {
            return Err(ConfigError::NoSources);
        }
        Ok(())
    }
}

impl ServeArgs {
    /// The validated configuration of `serve`.
    pub fn config(&self) -> Result<ServeConfig, ConfigError> {
        self.sources.require_any()?;
        Ok(ServeConfig {
            listen: self.listen,
            table: self.table.settings()?,
            entries: self.sources.entries.clone(),
            poll_interval: Duration::from_millis(500),
            limits: Limits::default(),
        })
    }
}
