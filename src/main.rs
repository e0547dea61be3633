#![forbid(unsafe_code)]
//! The `globaldns` binary: parse the command line, set up logging, run.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use globaldns::admin::explain;
use globaldns::cli::{CheckArgs, Cli, Command, ExplainArgs, Format, LogFormat, RecordsArgs, ServeArgs};
use globaldns::sources::files::FileSource;
use globaldns::table::{self, SourceInput, TableSettings};
use globaldns::{app, records};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check(args),
        Command::Records(args) => print_records(args),
        Command::Explain(args) => print_explanation(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("globaldns: {e:#}");
        ExitCode::from(2)
    })
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed log pipe must not kill the server: by default a failed write is reported
        // with eprintln!, which panics when stderr itself is the broken pipe.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    globaldns::memory::limit_arenas();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let running = app::start(config).await?;
        let shutdown = running.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            shutdown.cancel();
            tracing::info!("shutting down");
        });
        running.wait().await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Loads files once and builds their table; diagnostics go to stderr.
fn load(paths: Vec<std::path::PathBuf>, settings: &TableSettings) -> (table::Table, bool) {
    let mut source = FileSource::new(paths);
    let (_, diagnostics) = source.refresh();
    for d in &diagnostics {
        let level = if d.is_error() { "error" } else { "warning" };
        eprintln!("{level}: {d}");
    }
    let name: Arc<str> = "files".into();
    let entries = source.entries();
    let table = table::Live::build(
        settings,
        &[SourceInput {
            name: &name,
            entries: &entries,
        }],
        0,
        true,
    );
    (table, diagnostics.iter().any(|d| d.is_error()))
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let settings = args.table.settings()?;
    let (table, failed) = load(args.paths, &settings);
    print!("{}", records::zone_file(&table));
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn print_records(args: RecordsArgs) -> anyhow::Result<ExitCode> {
    let sources = args.sources.sources()?;
    let settings = args.table.settings()?;
    let table = if sources.contexts.is_empty() && sources.in_cluster.is_none() {
        load(sources.entries, &settings).0
    } else {
        let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
        let table = runtime.block_on(app::collect(&sources, settings))?;
        Arc::unwrap_or_clone(table)
    };
    match args.format {
        Format::Zone => print!("{}", records::zone_file(&table)),
        Format::Json => println!("{:#}", records::json(&table)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks a running server's admin endpoint why it answers a name as it does; exit 1 when the
/// question is malformed (HTTP 400), 2 when the server cannot be asked.
fn print_explanation(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let (status, body) = runtime.block_on(explain::fetch(args.admin, &args.name, &args.qtype))?;
    let value: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("{} answered HTTP {status} with no JSON: {body}", args.admin))?;
    match status {
        200 => {
            print!("{}", explain::render(&value));
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("globaldns: {}", value["error"].as_str().unwrap_or(&body));
            Ok(ExitCode::FAILURE)
        }
    }
}
