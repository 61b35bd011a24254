//! Server settings. Precedence: command-line flag, then `SIGNPOST_*`
//! environment variable (clap reads both), then the TOML config file
//! (`--config`), then the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use url::Url;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./signpost-data";
/// Default public base URL (what setup links and SP URLs start with).
pub const DEFAULT_PUBLIC_BASE_URL: &str = "http://127.0.0.1:8080/";
/// Default page cache of the audit database, in MiB. Small: with 64 MiB the server held
/// about 29 MiB more after a first start on 100,000 organizations, and audit pages and
/// exports were no faster (bench/FINDINGS.md, round 6).
pub const DEFAULT_AUDIT_CACHE_MIB: u64 = 8;
/// The largest audit cache accepted (64 GiB), so that the size in bytes cannot overflow.
const MAX_AUDIT_CACHE_MIB: u64 = 64 * 1024;
const MIB: u64 = 1024 * 1024;
/// Default of `--audit-serve-first-behind`: the audit timeline's catch-up at start from
/// which the server serves first and lets the timeline catch up behind it. Below it (a
/// rebuild of a million events included), one fold of the log builds every projection:
/// on the 2-core reference machine all were built 1.9 s after the log opened, the server
/// serving then, against serving after 1.3 s and the audit timeline after 2.9 s
/// (bench/FINDINGS.md, round 20).
pub const DEFAULT_AUDIT_SERVE_FIRST_BEHIND: u64 = 1 << 20;

/// `signpost serve` flags; each can also come from the environment or the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long, env = "SIGNPOST_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory: event log, data key, bootstrap token [default: ./signpost-data].
    #[arg(long, env = "SIGNPOST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Base of every URL handed out (setup links, SP entity id, ACS URL).
    #[arg(long, env = "SIGNPOST_PUBLIC_BASE_URL")]
    pub public_base_url: Option<Url>,
    /// File holding the 32-byte data key (hex) [default: secret.key in the data directory].
    #[arg(long, env = "SIGNPOST_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// TOML config file with the same keys (listen, data_dir, public_base_url, secret_key_file).
    #[arg(long, env = "SIGNPOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// How many route changes are kept for watchers that resume [default: 4096].
    #[arg(long, env = "SIGNPOST_ROUTING_HISTORY")]
    pub routing_history: Option<usize>,
    /// How many changed routes the server remembers (each once, at its last change) to
    /// catch up a watcher far behind with one delta instead of a reset and the whole
    /// table [default: 65536].
    #[arg(long, env = "SIGNPOST_ROUTING_CATCH_UP_ROUTES")]
    pub routing_catch_up_routes: Option<usize>,
    /// Page cache of the audit database, in MiB [default: 8]. Audit queries read what is
    /// not cached from disk (through the OS's page cache); more only helps heavy audit
    /// query loads, and costs resident memory.
    #[arg(long, env = "SIGNPOST_AUDIT_CACHE_MIB")]
    pub audit_cache_mib: Option<u64>,
    /// When the audit timeline starts at least this many events behind the log (a
    /// rebuild, a database restored from an old copy), the server serves first and the
    /// timeline catches up behind it; below it, one fold of the log builds every
    /// projection, the timeline included, and the server serves once all have caught up.
    /// A larger value rebuilds everything sooner but serves later [default: 1048576].
    #[arg(long, env = "SIGNPOST_AUDIT_SERVE_FIRST_BEHIND")]
    pub audit_serve_first_behind: Option<u64>,
    /// Seconds between progress messages on idle routing streams [default: 5].
    #[arg(long, env = "SIGNPOST_ROUTING_PROGRESS_SECONDS")]
    pub routing_progress_seconds: Option<u64>,
    /// Seconds between signed log checkpoints (one is also made at start when the head
    /// moved since the last) [default: 3600].
    #[arg(long, env = "SIGNPOST_CHECKPOINT_INTERVAL_SECONDS")]
    pub checkpoint_interval_seconds: Option<u64>,
    /// File holding the Ed25519 checkpoint signing key (hex seed)
    /// [default: checkpoint.key in the data directory].
    #[arg(long, env = "SIGNPOST_CHECKPOINT_KEY_FILE")]
    pub checkpoint_key_file: Option<PathBuf>,
    /// How many events a live event-feed subscriber may fall behind the head before it is
    /// ended with `resume_from_position` [default: 100000].
    #[arg(long, env = "SIGNPOST_EVENT_FEED_MAX_LAG")]
    pub event_feed_max_lag: Option<u64>,
    /// Seconds between sweeps that record expired setup links [default: 60].
    #[arg(long, env = "SIGNPOST_LINK_EXPIRY_SWEEP_SECONDS")]
    pub link_expiry_sweep_seconds: Option<u64>,
    /// TEST-ONLY: let setup forms fetch IdP metadata and discovery documents
    /// over http from loopback. Never set this in production.
    #[arg(long, env = "SIGNPOST_TEST_ONLY_ALLOW_LOOPBACK_HTTP_IDP", hide = true)]
    pub test_only_allow_loopback_http_idp: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    public_base_url: Option<Url>,
    secret_key_file: Option<PathBuf>,
    routing_history: Option<usize>,
    routing_catch_up_routes: Option<usize>,
    audit_cache_mib: Option<u64>,
    audit_serve_first_behind: Option<u64>,
    routing_progress_seconds: Option<u64>,
    checkpoint_interval_seconds: Option<u64>,
    checkpoint_key_file: Option<PathBuf>,
    event_feed_max_lag: Option<u64>,
    link_expiry_sweep_seconds: Option<u64>,
}

/// Resolved server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Public base URL.
    pub public_base_url: Url,
    /// Data key file, when not in the data directory.
    pub secret_key_file: Option<PathBuf>,
    /// TEST-ONLY switch, off by default.
    pub allow_loopback_http_idp_for_tests: bool,
    /// Route changes kept for resuming watchers.
    pub routing_history: usize,
    /// Changed routes remembered for catching up watchers far behind.
    pub routing_catch_up_routes: usize,
    /// The audit database's page cache, in bytes.
    pub audit_cache_bytes: u64,
    /// How far behind the log the audit timeline must start for the server to serve
    /// before it has caught up.
    pub audit_serve_first_behind: u64,
    /// Interval of progress messages on idle routing streams.
    pub routing_progress_interval: std::time::Duration,
    /// Interval between signed log checkpoints.
    pub checkpoint_interval: std::time::Duration,
    /// Checkpoint signing key file, when not in the data directory.
    pub checkpoint_key_file: Option<PathBuf>,
    /// Events a live event-feed subscriber may fall behind the head.
    pub event_feed_max_lag: u64,
    /// Interval between expired-setup-link sweeps.
    pub link_expiry_sweep_interval: std::time::Duration,
}

impl ServerConfig {
    /// Defaults, with `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            data_dir: data_dir.to_owned(),
            public_base_url: DEFAULT_PUBLIC_BASE_URL.parse().expect("valid default"),
            secret_key_file: None,
            allow_loopback_http_idp_for_tests: false,
            routing_history: 4096,
            routing_catch_up_routes: 65_536,
            audit_cache_bytes: DEFAULT_AUDIT_CACHE_MIB * MIB,
            audit_serve_first_behind: DEFAULT_AUDIT_SERVE_FIRST_BEHIND,
            routing_progress_interval: std::time::Duration::from_secs(5),
            checkpoint_interval: std::time::Duration::from_secs(3600),
            checkpoint_key_file: None,
            event_feed_max_lag: 100_000,
            link_expiry_sweep_interval: std::time::Duration::from_secs(60),
        }
    }

    /// Merges flags / environment over the config file over defaults.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let mut config = Self::new(&data_dir);
        if let Some(listen) = args.listen.or(file.listen) {
            config.listen = listen;
        }
        if let Some(url) = args.public_base_url.clone().or(file.public_base_url) {
            if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() {
                anyhow::bail!("public base URL must be an http(s) URL, got {url}");
            }
            config.public_base_url = url;
        }
        // Joining relative paths needs a trailing slash on the base.
        if !config.public_base_url.path().ends_with('/') {
            let path = format!("{}/", config.public_base_url.path());
            config.public_base_url.set_path(&path);
        }
        config.secret_key_file = args.secret_key_file.clone().or(file.secret_key_file);
        config.allow_loopback_http_idp_for_tests = args.test_only_allow_loopback_http_idp;
        if let Some(history) = args.routing_history.or(file.routing_history) {
            config.routing_history = history.max(1);
        }
        if let Some(routes) = args
            .routing_catch_up_routes
            .or(file.routing_catch_up_routes)
        {
            config.routing_catch_up_routes = routes.max(1);
        }
        if let Some(mib) = args.audit_cache_mib.or(file.audit_cache_mib) {
            config.audit_cache_bytes = mib.clamp(1, MAX_AUDIT_CACHE_MIB) * MIB;
        }
        if let Some(events) = args
            .audit_serve_first_behind
            .or(file.audit_serve_first_behind)
        {
            config.audit_serve_first_behind = events;
        }
        if let Some(seconds) = args
            .routing_progress_seconds
            .or(file.routing_progress_seconds)
        {
            config.routing_progress_interval = std::time::Duration::from_secs(seconds.max(1));
        }
        if let Some(seconds) = args
            .checkpoint_interval_seconds
            .or(file.checkpoint_interval_seconds)
        {
            config.checkpoint_interval = std::time::Duration::from_secs(seconds.max(1));
        }
        config.checkpoint_key_file = args
            .checkpoint_key_file
            .clone()
            .or(file.checkpoint_key_file);
        if let Some(lag) = args.event_feed_max_lag.or(file.event_feed_max_lag) {
            config.event_feed_max_lag = lag.max(1);
        }
        if let Some(seconds) = args
            .link_expiry_sweep_seconds
            .or(file.link_expiry_sweep_seconds)
        {
            config.link_expiry_sweep_interval = std::time::Duration::from_secs(seconds.max(1));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file holding `text`, in a directory of its own named after `name`.
    fn config_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("signpost.toml");
        std::fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = config_file(
            "signpost-config",
            "listen = \"127.0.0.1:6000\"\npublic_base_url = \"https://sso.example.com/base\"\n",
        );
        let args = ServeArgs {
            config: Some(file),
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            ..Default::default()
        };
        let config = ServerConfig::resolve(&args).unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(
            config.public_base_url.as_str(),
            "https://sso.example.com/base/"
        );
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(!config.allow_loopback_http_idp_for_tests);
        assert_eq!(config.audit_cache_bytes, 8 * 1024 * 1024);
        assert_eq!(
            config.audit_serve_first_behind,
            DEFAULT_AUDIT_SERVE_FIRST_BEHIND
        );
    }

    #[test]
    fn the_audit_serve_first_threshold_comes_from_the_flag_or_the_file() {
        let file = config_file(
            "signpost-serve-first",
            "audit_serve_first_behind = 2000000\n",
        );
        let from_file = ServerConfig::resolve(&ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(from_file.audit_serve_first_behind, 2_000_000);
        let from_flag = ServerConfig::resolve(&ServeArgs {
            config: Some(file),
            audit_serve_first_behind: Some(u64::MAX),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(from_flag.audit_serve_first_behind, u64::MAX);
    }

    #[test]
    fn the_audit_cache_is_given_in_mib_and_bounded() {
        let resolve = |mib| {
            ServerConfig::resolve(&ServeArgs {
                audit_cache_mib: Some(mib),
                ..Default::default()
            })
            .unwrap()
            .audit_cache_bytes
        };
        assert_eq!(resolve(64), 64 * 1024 * 1024);
        assert_eq!(resolve(0), 1024 * 1024);
        assert_eq!(resolve(u64::MAX), 64 * 1024 * 1024 * 1024);
    }

    #[test]
    fn the_example_config_in_deploy_parses() {
        let example = include_str!("../../../deploy/signpost.toml");
        let parsed: FileConfig = toml::from_str(example).unwrap();
        assert_eq!(parsed.routing_history, Some(4096));
        assert_eq!(parsed.routing_catch_up_routes, Some(65_536));
        assert_eq!(parsed.audit_cache_mib, Some(8));
        assert_eq!(
            parsed.audit_serve_first_behind,
            Some(DEFAULT_AUDIT_SERVE_FIRST_BEHIND)
        );
        assert!(parsed.public_base_url.is_some());
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let file = config_file("signpost-config-bad", "listne = \"127.0.0.1:6000\"\n");
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        assert!(ServerConfig::resolve(&args).is_err());
    }
}
