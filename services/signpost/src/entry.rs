//! The `signpost` binary's entry point, shared by every binary that runs it
//! (the end-to-end tests start the exact same code as a child process).

use crate::cli::{self, Cli, Command};
use crate::{Overrides, Server, ServerConfig};
use clap::Parser;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGNPOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The runtime's worker threads: `TOKIO_WORKER_THREADS` when set (as tokio itself reads
/// it), else one per core.
fn worker_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

/// Parses the command line and runs `serve` or a CLI command.
pub fn main_entry() -> std::process::ExitCode {
    let workers = worker_threads();
    let started = std::sync::atomic::AtomicUsize::new(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        // The runtime starts its workers first, so the first `workers` threads it names
        // are they; the rest run blocking work (the audit database's writes, reads of the
        // log away from its head). Named apart, they tell `top -H` and the benchmark's
        // per-thread count (`bench/instructions.sh --kernel`) where the CPU goes.
        .thread_name_fn(move || {
            let n = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n < workers {
                "signpost-worker"
            } else {
                "signpost-block"
            }
            .to_owned()
        })
        .event_interval(signpost_grpc::transport::RUNTIME_EVENT_INTERVAL)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(main_async())
}

async fn main_async() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let result = match &cli.command {
        Command::Serve(args) => {
            init_logging();
            serve(args).await
        }
        _ => cli::run(cli).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            match error.downcast_ref::<tonic::Status>() {
                Some(status) => cli::report_status(status, json),
                None => eprintln!("error: {error:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: &crate::config::ServeArgs) -> anyhow::Result<()> {
    let config = ServerConfig::resolve(args)?;
    if config.allow_loopback_http_idp_for_tests {
        tracing::warn!("TEST-ONLY switch on: IdP documents may be fetched over http from loopback");
    }
    let mut server = Server::start(&config, Overrides::default()).await?;
    eprintln!("signpost listening on {}", server.local_addr);
    match &server.bootstrap_token_file {
        Some(path) => eprintln!("bootstrap admin token written to {}", path.display()),
        None => eprintln!(
            "admin token file (from first start): {}",
            signpost_control::ControlPlane::bootstrap_token_path(&config.data_dir).display()
        ),
    }
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::select! {
        result = stop => {
            result?;
            tracing::info!("shutting down");
            server.request_stop();
            server.wait().await
        }
    }
}
