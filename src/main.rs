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
    /// Creates demo data (--demo) and/or an operator account (--operator PHONE, with the
    /// password in NONGSAN_OPERATOR_PASSWORD). Prints lines a shell can eval.
    Seed {
        /// Households, a cooperative and the 50 demo products, with stock. The demo accounts
        /// it creates get a random password, which it prints.
        #[arg(long)]
        demo: bool,
        /// Phone number of an operator account to create (or whose password to reset).
        #[arg(long)]
        operator: Option<String>,
    },
    /// Imports a cooperative's stock from a CSV or XLSX file (columns listing, lot_code,
    /// household, quantity, harvest_date): every row, or none when one is bad.
    Import {
        /// The cooperative's id.
        #[arg(long)]
        cooperative: nongsan_shared::CooperativeId,
        /// The file (.csv or .xlsx).
        file: std::path::PathBuf,
        /// Take the rows in even if the cooperative imported the same rows before; without
        /// it such a file is refused, so that a file sent twice adds its stock once.
        #[arg(long)]
        again: bool,
    },
    /// Rebuilds the search index (Meilisearch, or the embedded index in the data folder)
    /// from PostgreSQL.
    Reindex,
    /// Prints the OpenAPI document of all three services.
    Openapi,
    /// Exits 0 when the URL answers 2xx: a health check for containers without curl.
    Healthcheck {
        /// The URL to ask, e.g. http://localhost:8080/healthz.
        url: String,
    },
}

/// The process's allocator. With glibc's, nongsan spent a fifth of its CPU per search
/// through Meilisearch in `malloc` and `free` (`perf`; BENCHMARKS.md, 2026-12-05).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Seed { demo, operator } => {
            let settings = Settings::load()?;
            telemetry::init_tracing(settings.log_format);
            let operator = match operator {
                None => None,
                Some(phone) => {
                    let phone = nongsan_shared::PhoneNumber::parse(&phone)
                        .map_err(|e| anyhow::anyhow!("--operator {e}"))?;
                    let password = std::env::var("NONGSAN_OPERATOR_PASSWORD")
                        .ok()
                        .filter(|p| p.chars().count() >= 8)
                        .ok_or_else(|| anyhow::anyhow!("set NONGSAN_OPERATOR_PASSWORD (8 characters or more) for --operator"))?;
                    Some((phone, password))
                }
            };
            anyhow::ensure!(
                demo || operator.is_some(),
                "say what to seed: --demo and/or --operator PHONE"
            );
            for line in nongsan::seed(settings, nongsan::SeedRequest { demo, operator }).await? {
                writeln!(std::io::stdout(), "{line}")?;
            }
            Ok(())
        }
        Command::Import {
            cooperative,
            file,
            again,
        } => {
            let settings = Settings::load()?;
            telemetry::init_tracing(settings.log_format);
            let bar = progress_bar("rows");
            let n = nongsan::import_stock(settings, cooperative, &file, again, &|total, done| {
                bar.set_length(u64::try_from(total).unwrap_or(0));
                bar.set_position(u64::try_from(done).unwrap_or(0));
            })
            .await;
            bar.finish_and_clear();
            writeln!(std::io::stdout(), "imported {} rows", n?)?;
            Ok(())
        }
        Command::Reindex => {
            let settings = Settings::load()?;
            telemetry::init_tracing(settings.log_format);
            let bar = progress_bar("listings");
            let n = nongsan::reindex(settings, &|total, done| {
                bar.set_length(u64::try_from(total).unwrap_or(0));
                bar.set_position(u64::try_from(done).unwrap_or(0));
            })
            .await;
            bar.finish_and_clear();
            writeln!(std::io::stdout(), "indexed {} listings", n?)?;
            Ok(())
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

/// A progress bar on stderr counting `what`.
fn progress_bar(what: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what}"))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    )
}
