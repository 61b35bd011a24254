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

/// Parses the command line and runs `serve` or a CLI command.
pub fn main_entry() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
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
