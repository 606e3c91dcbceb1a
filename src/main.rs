//! The `nongsan` command: wiring only. Parses the command line, loads settings, starts
//! telemetry and calls the library.

use std::{io::Write, process::ExitCode};

use clap::{Parser, Subcommand};
use nongsan::ServiceName;
use nongsan_shared::{config::Settings, telemetry};

/// nongsan: the backend of a marketplace for Vietnamese farm produce.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs all three services in one process on one port (the default). Without
    /// DATABASE_URL it starts a private PostgreSQL cluster in the data folder.
    Up,
    /// Runs one service on its own port.
    Serve {
        /// Which service.
        service: ServiceName,
    },
    /// Brings every service's schema up to date and exits.
    Migrate,
    /// Prints the OpenAPI document of all three services.
    Openapi,
    /// Exits 0 when the URL answers 2xx: a health check for containers without curl.
    Healthcheck {
        /// The URL to ask, e.g. http://localhost:8080/healthz.
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Up))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// One line on stderr, exit code 1: never a panic or a stack trace.
fn fail(e: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "nongsan: {e:#}");
    ExitCode::FAILURE
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Openapi => {
            let json = nongsan::openapi(&ServiceName::ALL).to_pretty_json()?;
            writeln!(std::io::stdout(), "{json}")?;
            Ok(())
        }
        Command::Healthcheck { url } => {
            let res = reqwest::get(&url).await?;
            anyhow::ensure!(res.status().is_success(), "{url} answered {}", res.status());
            Ok(())
        }
        Command::Migrate => {
            let settings = Settings::load()?;
            telemetry::init_tracing(settings.log_format);
            nongsan::migrate(settings).await
        }
        Command::Up => serve(&ServiceName::ALL).await,
        Command::Serve { service } => serve(&[service]).await,
    }
}

async fn serve(services: &[ServiceName]) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    telemetry::init_tracing(settings.log_format);
    let running = nongsan::build(settings, services).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
