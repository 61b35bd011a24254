//! Command line and environment configuration (`SIGNPOST_EDGE_*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::edge::EdgeConfig;

/// The Signpost login edge: follows the control plane's routing stream and
/// tells the sign-in page where each email signs in.
#[derive(Debug, Clone, Parser)]
#[command(name = "signpost-edge", version)]
pub struct Cli {
    /// Control plane gRPC addresses, tried in turn (comma-separated or repeated).
    #[arg(
        long = "control-plane",
        env = "SIGNPOST_EDGE_CONTROL_PLANE",
        value_delimiter = ',',
        required = true
    )]
    pub control_planes: Vec<String>,
    /// API token with the `edge` role.
    #[arg(
        long,
        env = "SIGNPOST_EDGE_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// File holding the API token (surrounding whitespace is ignored).
    #[arg(long, env = "SIGNPOST_EDGE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// HTTP listen address.
    #[arg(long, env = "SIGNPOST_EDGE_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Where the last good routing table is kept.
    #[arg(
        long,
        env = "SIGNPOST_EDGE_STATE_FILE",
        default_value = "./signpost-edge-state.pb"
    )]
    pub state_file: PathBuf,
    /// First reconnect backoff ceiling, in milliseconds.
    #[arg(long, env = "SIGNPOST_EDGE_MIN_BACKOFF_MS", default_value_t = 100)]
    pub min_backoff_ms: u64,
    /// Largest reconnect backoff ceiling, in milliseconds.
    #[arg(long, env = "SIGNPOST_EDGE_MAX_BACKOFF_MS", default_value_t = 10_000)]
    pub max_backoff_ms: u64,
}

impl Cli {
    /// Resolves the token and builds an [`EdgeConfig`].
    pub fn into_config(self) -> anyhow::Result<EdgeConfig> {
        let token = match (self.token, self.token_file) {
            (Some(token), _) => token,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read the token file `{}`", path.display()))?,
            (None, None) => anyhow::bail!("an API token is needed: --token or --token-file"),
        };
        let control_planes: Vec<String> = self
            .control_planes
            .into_iter()
            .map(|address| address.trim().to_owned())
            .filter(|address| !address.is_empty())
            .collect();
        anyhow::ensure!(
            !control_planes.is_empty(),
            "at least one --control-plane address is needed"
        );
        Ok(EdgeConfig {
            control_planes,
            token: token.trim().to_owned(),
            listen: self.listen,
            state_file: self.state_file,
            min_backoff: Duration::from_millis(self.min_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms.max(self.min_backoff_ms)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_planes_can_be_comma_separated_or_repeated() {
        let cli = Cli::try_parse_from([
            "signpost-edge",
            "--control-plane",
            "http://a:1,http://b:2",
            "--control-plane",
            "http://c:3",
            "--token",
            "t",
        ])
        .unwrap();
        let config = cli.into_config().unwrap();
        assert_eq!(
            config.control_planes,
            vec!["http://a:1", "http://b:2", "http://c:3"]
        );
        assert_eq!(config.listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(config.min_backoff, Duration::from_millis(100));
        assert_eq!(config.max_backoff, Duration::from_secs(10));
    }

    #[test]
    fn the_token_can_come_from_a_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("token");
        std::fs::write(&path, "secret-token\n").unwrap();
        let cli = Cli::try_parse_from([
            "signpost-edge",
            "--control-plane",
            "http://a:1",
            "--token-file",
            path.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(cli.into_config().unwrap().token, "secret-token");
    }

    #[test]
    fn a_token_is_required() {
        let cli = Cli::try_parse_from(["signpost-edge", "--control-plane", "http://a:1"]).unwrap();
        assert!(cli.into_config().is_err());
    }
}
