//! `signpost audit ...` and `signpost log export`: the compliance side of the
//! CLI. Lists print a readable table (or `--json`); exports stream JSON Lines
//! or CSV with a progress bar; verification walks the chain in chunks with a
//! progress bar; checkpoints can be verified offline against an exported log.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use signpost_api::audit::v1 as audit;
use signpost_api::audit::v1::audit_service_client::AuditServiceClient;
use signpost_api::eventlog::v1 as eventlog;
use signpost_api::eventlog::v1::event_log_service_client::EventLogServiceClient;

use crate::cli::{interceptor, Cli};
use crate::output::{print, to_json};

/// Positions verified per `VerifyLog` call (one progress step).
const VERIFY_CHUNK: u64 = 50_000;

/// Audit filters shared by `list` and `export`.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only this organization.
    #[arg(long)]
    pub org: Option<String>,
    /// From this time (RFC 3339, inclusive).
    #[arg(long)]
    pub since: Option<String>,
    /// Until this time (RFC 3339, exclusive).
    #[arg(long)]
    pub until: Option<String>,
    /// Only these event types (repeat), e.g. provider_switched.
    #[arg(long = "type")]
    pub event_types: Vec<String>,
    /// Only entries caused by this actor id (a token id, a setup link id).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this connection.
    #[arg(long)]
    pub connection: Option<String>,
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header.
    Csv,
}

/// A point in time.
#[derive(Debug, Clone, Default, Args)]
pub struct AtArgs {
    /// As of this time (RFC 3339).
    #[arg(long, conflicts_with = "position")]
    pub time: Option<String>,
    /// As of this log position.
    #[arg(long)]
    pub position: Option<u64>,
}

/// `signpost audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries (a table; --json for the raw reply).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Entries per page (at most 1000).
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        /// Continue from a previous page.
        #[arg(long, default_value = "")]
        page_token: String,
        /// Newest first.
        #[arg(long)]
        newest_first: bool,
    },
    /// Export audit entries (JSON Lines or CSV) for any range, resumable.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// Resume after this position.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Walk the hash chain: the head, or the first bad position and what is wrong.
    Verify {
        /// First position (default: the start).
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last position (default: the head).
        #[arg(long)]
        to: Option<u64>,
    },
    /// How a domain or an organization routed at a time or position, and why.
    At {
        /// The domain.
        #[arg(long, conflicts_with = "org", required_unless_present = "org")]
        domain: Option<String>,
        /// The organization.
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        at: AtArgs,
    },
    /// A connection's state as of a time or position.
    ConnectionAt {
        /// Connection id.
        connection_id: String,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Signed checkpoints.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
}

/// `signpost audit checkpoint ...`
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Sign a checkpoint of the current head now (admin).
    Create {
        /// Also save it (JSON) to this file.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Idempotency key: a retry with the same id returns the checkpoint the first
        /// attempt made.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// List checkpoints, newest first.
    List,
    /// Print the public key checkpoints are signed with (hex).
    Key {
        /// Also save the raw key (hex) to this file.
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Verify a saved checkpoint: online against the server, or --offline against an exported log.
    Verify {
        /// The checkpoint (JSON, as saved by `create --save`).
        checkpoint: PathBuf,
        /// Verify without the server, against `--log` and `--public-key`.
        #[arg(long, requires_all = ["log", "public_key"])]
        offline: bool,
        /// An exported log (`signpost log export`).
        #[arg(long)]
        log: Option<PathBuf>,
        /// The public key (hex, or a file holding it).
        #[arg(long)]
        public_key: Option<String>,
    },
}

/// `signpost log ...`
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Export the raw log (length-delimited envelopes) up to the current head.
    Export {
        /// The file to write.
        #[arg(long)]
        output: PathBuf,
        /// First position.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
}

type Audit = AuditServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        crate::cli::BearerInterceptor,
    >,
>;

async fn audit_client(cli: &Cli) -> anyhow::Result<Audit> {
    let token = crate::cli::api_token(cli)?;
    Ok(AuditServiceClient::with_interceptor(
        crate::cli::channel(&cli.server).await?,
        interceptor(&token, None)?,
    ))
}

fn timestamp(text: &str, flag: &str) -> anyhow::Result<prost_types::Timestamp> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("{flag} must be RFC 3339, e.g. 2026-03-03T00:00:00Z"))?;
    Ok(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    })
}

fn filter(args: &FilterArgs) -> anyhow::Result<audit::AuditFilter> {
    Ok(audit::AuditFilter {
        organization_id: args.org.clone().unwrap_or_default(),
        start_time: args
            .since
            .as_deref()
            .map(|t| timestamp(t, "--since"))
            .transpose()?,
        end_time: args
            .until
            .as_deref()
            .map(|t| timestamp(t, "--until"))
            .transpose()?,
        event_types: args.event_types.clone(),
        actor_id: args.actor.clone().unwrap_or_default(),
        connection_id: args.connection.clone().unwrap_or_default(),
    })
}

fn point_in_time(args: &AtArgs) -> anyhow::Result<audit::PointInTime> {
    let at = match (&args.time, args.position) {
        (Some(time), _) => Some(audit::point_in_time::At::Time(timestamp(time, "--time")?)),
        (None, Some(position)) => Some(audit::point_in_time::At::Position(position)),
        (None, None) => None,
    };
    Ok(audit::PointInTime { at })
}

fn time_text(time: Option<&prost_types::Timestamp>) -> String {
    time.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn actor_text(entry: &audit::AuditEntry) -> String {
    let Some(actor) = &entry.actor else {
        return String::new();
    };
    let name = if actor.display_name.is_empty() {
        actor.id.clone()
    } else {
        actor.display_name.clone()
    };
    if actor.on_behalf_of.is_empty() {
        name
    } else {
        format!("{name} for {}", actor.on_behalf_of)
    }
}

fn target_text(entry: &audit::AuditEntry) -> String {
    let Some(target) = &entry.target else {
        return String::new();
    };
    [
        &target.domain,
        &target.connection_id,
        &target.setup_link_id,
        &target.token_id,
        &target.organization_id,
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .cloned()
    .unwrap_or_default()
}

fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        format!("{text:width$}")
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Prints entries as a table.
fn print_table(entries: &[audit::AuditEntry]) {
    println!(
        "{:>8}  {:19}  {:24}  {:26}  {:36}  SUMMARY",
        "POSITION", "TIME (UTC)", "ACTOR", "ACTION", "TARGET"
    );
    for entry in entries {
        println!(
            "{:>8}  {:19}  {}  {}  {}  {}",
            entry.position,
            time_text(entry.time.as_ref()),
            cut(&actor_text(entry), 24),
            cut(&entry.action, 26),
            cut(&target_text(entry), 36),
            entry.summary
        );
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

const CSV_HEADER: &str = "position,time,actor_kind,actor_id,actor_name,on_behalf_of,action,organization_id,connection_id,domain,setup_link_id,token_id,summary,correlation_id";

fn csv_row(entry: &audit::AuditEntry) -> String {
    let actor = entry.actor.clone().unwrap_or_default();
    let target = entry.target.clone().unwrap_or_default();
    let time = entry
        .time
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default();
    let kind = signpost_api::log::v1::ActorKind::try_from(actor.kind)
        .map(|k| k.as_str_name().to_owned())
        .unwrap_or_default();
    [
        entry.position.to_string(),
        time,
        kind,
        actor.id,
        actor.display_name,
        actor.on_behalf_of,
        entry.action.clone(),
        target.organization_id,
        target.connection_id,
        target.domain,
        target.setup_link_id,
        target.token_id,
        entry.summary.clone(),
        entry.correlation_id.clone(),
    ]
    .iter()
    .map(|f| csv_field(f))
    .collect::<Vec<_>>()
    .join(",")
}

fn progress_bar(length: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Runs `signpost audit ...`.
pub async fn run_audit(cli: &Cli, command: &AuditCommand) -> anyhow::Result<()> {
    let mut client = audit_client(cli).await?;
    match command {
        AuditCommand::List {
            filter: args,
            page_size,
            page_token,
            newest_first,
        } => {
            let order = if *newest_first {
                audit::Order::Descending
            } else {
                audit::Order::Ascending
            };
            let reply = client
                .list_audit_events(audit::ListAuditEventsRequest {
                    filter: Some(filter(args)?),
                    page_size: *page_size,
                    page_token: page_token.clone(),
                    order: order as i32,
                })
                .await?
                .into_inner();
            if cli.json {
                print(&reply, "signpost.audit.v1.ListAuditEventsResponse", true);
            } else {
                print_table(&reply.entries);
                if !reply.next_page_token.is_empty() {
                    println!("\nmore: --page-token {}", reply.next_page_token);
                }
            }
        }
        AuditCommand::Export {
            filter: args,
            after,
            format,
            output,
        } => {
            let mut out: Box<dyn Write> = match output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            if matches!(format, ExportFormat::Csv) {
                writeln!(out, "{CSV_HEADER}")?;
            }
            let mut stream = client
                .export_audit_events(audit::ExportAuditEventsRequest {
                    filter: Some(filter(args)?),
                    after_position: *after,
                })
                .await?
                .into_inner();
            let mut bar: Option<ProgressBar> = None;
            let mut count = 0u64;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let bar = bar.get_or_insert_with(|| {
                    let bar = progress_bar(batch.head.saturating_sub(*after), "exporting");
                    bar.set_position(0);
                    bar
                });
                for entry in &batch.decode_entries()? {
                    match format {
                        ExportFormat::Jsonl => {
                            writeln!(out, "{}", to_json(entry, "signpost.audit.v1.AuditEntry"))?
                        }
                        ExportFormat::Csv => writeln!(out, "{}", csv_row(entry))?,
                    }
                    count += 1;
                }
                bar.set_position(batch.position.saturating_sub(*after));
            }
            out.flush()?;
            if let Some(bar) = bar {
                bar.finish_with_message(format!("exported {count} entries"));
            }
        }
        AuditCommand::Verify { from, to } => {
            // Verify in chunks (for the progress bar); chunks overlap by one position so the
            // link between two chunks is checked too.
            let from = (*from).max(1);
            let mut start = from;
            let mut target = to.unwrap_or(0);
            let mut bar: Option<ProgressBar> = None;
            let mut checked = 0u64;
            let last = loop {
                let end = start.saturating_add(VERIFY_CHUNK);
                let end = if target > 0 { end.min(target) } else { end };
                let reply = client
                    .verify_log(audit::VerifyLogRequest {
                        from_position: start,
                        to_position: end,
                    })
                    .await?
                    .into_inner();
                if target == 0 {
                    target = reply.log_head_position;
                }
                let bar = bar.get_or_insert_with(|| {
                    progress_bar(target.saturating_sub(from) + 1, "verifying")
                });
                if !reply.intact {
                    bar.abandon();
                    if cli.json {
                        print(&reply, "signpost.audit.v1.VerifyLogResponse", true);
                    } else {
                        println!(
                            "BROKEN at position {}: {}",
                            reply.bad_position, reply.problem
                        );
                    }
                    anyhow::bail!(
                        "the log's hash chain is broken at position {}",
                        reply.bad_position
                    );
                }
                checked += reply.events_checked.saturating_sub(u64::from(start > from));
                bar.set_position(reply.head_position.saturating_sub(from) + 1);
                if reply.head_position >= target || reply.events_checked == 0 {
                    break reply;
                }
                start = reply.head_position;
            };
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let mut last = last;
            last.events_checked = checked;
            if cli.json {
                print(&last, "signpost.audit.v1.VerifyLogResponse", true);
            } else {
                println!(
                    "intact: {checked} events checked, head {} {}",
                    last.head_position,
                    hex::encode(&last.head_hash)
                );
            }
        }
        AuditCommand::At { domain, org, at } => {
            let subject = match (domain, org) {
                (Some(domain), _) => audit::get_routing_at_request::Subject::Domain(domain.clone()),
                (None, Some(org)) => {
                    audit::get_routing_at_request::Subject::OrganizationId(org.clone())
                }
                (None, None) => anyhow::bail!("give --domain or --org"),
            };
            let reply = client
                .get_routing_at(audit::GetRoutingAtRequest {
                    subject: Some(subject),
                    at: Some(point_in_time(at)?),
                })
                .await?
                .into_inner();
            if cli.json {
                print(&reply, "signpost.audit.v1.GetRoutingAtResponse", true);
            } else {
                println!("as of log position {}", reply.position);
                for domain in &reply.domains {
                    let route = match &domain.route {
                        Some(route) => {
                            let idp = route
                                .saml
                                .as_ref()
                                .map(|s| s.idp_entity_id.clone())
                                .or_else(|| route.oidc.as_ref().map(|o| o.issuer.clone()))
                                .unwrap_or_default();
                            format!("SSO via connection {} ({idp})", route.connection_id)
                        }
                        None => "password".to_owned(),
                    };
                    let cause = domain
                        .cause
                        .as_ref()
                        .map(|c| {
                            format!(
                                "since position {} at {} by {}: {}",
                                c.position,
                                time_text(c.time.as_ref()),
                                actor_text(c),
                                c.summary
                            )
                        })
                        .unwrap_or_else(|| "never routed before then".to_owned());
                    println!("{}: {route}\n  {cause}", domain.domain);
                }
            }
        }
        AuditCommand::ConnectionAt { connection_id, at } => {
            let reply = client
                .get_connection_at(audit::GetConnectionAtRequest {
                    connection_id: connection_id.clone(),
                    at: Some(point_in_time(at)?),
                })
                .await?
                .into_inner();
            print(
                &reply,
                "signpost.audit.v1.GetConnectionAtResponse",
                cli.json,
            );
        }
        AuditCommand::Checkpoint(command) => run_checkpoint(cli, &mut client, command).await?,
    }
    Ok(())
}

async fn run_checkpoint(
    cli: &Cli,
    client: &mut Audit,
    command: &CheckpointCommand,
) -> anyhow::Result<()> {
    match command {
        CheckpointCommand::Create { save, request_id } => {
            let reply = client
                .create_checkpoint(audit::CreateCheckpointRequest {
                    request_id: request_id.clone(),
                })
                .await?
                .into_inner();
            if let (Some(path), Some(checkpoint)) = (save, &reply.checkpoint) {
                let json = to_json(checkpoint, "signpost.audit.v1.Checkpoint");
                std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
            }
            print(
                &reply,
                "signpost.audit.v1.CreateCheckpointResponse",
                cli.json,
            );
        }
        CheckpointCommand::List => {
            let reply = client
                .list_checkpoints(audit::ListCheckpointsRequest::default())
                .await?
                .into_inner();
            print(
                &reply,
                "signpost.audit.v1.ListCheckpointsResponse",
                cli.json,
            );
        }
        CheckpointCommand::Key { save } => {
            let reply = client
                .get_checkpoint_public_key(audit::GetCheckpointPublicKeyRequest {})
                .await?
                .into_inner();
            if let Some(path) = save {
                std::fs::write(path, hex::encode(&reply.public_key))?;
            }
            if cli.json {
                print(
                    &reply,
                    "signpost.audit.v1.GetCheckpointPublicKeyResponse",
                    true,
                );
            } else {
                println!(
                    "key_id: {}\npublic_key: {}",
                    reply.key_id,
                    hex::encode(&reply.public_key)
                );
            }
        }
        CheckpointCommand::Verify { .. } => unreachable!("handled without a server connection"),
    }
    Ok(())
}

/// Reads a checkpoint saved as JSON.
fn read_checkpoint(path: &PathBuf) -> anyhow::Result<audit::Checkpoint> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    crate::output::from_json(&text, "signpost.audit.v1.Checkpoint")
        .with_context(|| format!("{} is not a checkpoint", path.display()))
}

/// `signpost audit checkpoint verify`, online or offline.
pub async fn verify_checkpoint(
    cli: &Cli,
    checkpoint: &PathBuf,
    offline: bool,
    log: Option<&PathBuf>,
    public_key: Option<&str>,
) -> anyhow::Result<()> {
    let checkpoint = read_checkpoint(checkpoint)?;
    if offline {
        let (log, key) = (
            log.expect("clap requires --log"),
            public_key.expect("clap requires --public-key"),
        );
        let key_text = if std::path::Path::new(key).exists() {
            std::fs::read_to_string(key)?
        } else {
            key.to_owned()
        };
        let key = hex::decode(key_text.trim()).context("--public-key must be hex")?;
        let file =
            std::fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        let bar = progress_bar(length, "verifying");
        let reader = bar.wrap_read(std::io::BufReader::new(file));
        let mut read_error = None;
        let envelopes = signpost_audit::read_log_export(reader).map_while(|item| match item {
            Ok(envelope) => Some(envelope),
            Err(error) => {
                read_error = Some(error);
                None
            }
        });
        let verdict = signpost_audit::verify_checkpoint_offline(&checkpoint, &key, envelopes);
        bar.finish_and_clear();
        if let Some(error) = read_error {
            anyhow::bail!("the exported log is damaged: {error}");
        }
        let head =
            verdict.map_err(|problem| anyhow::anyhow!("checkpoint NOT verified: {problem}"))?;
        println!(
            "checkpoint verified: signature valid, the log holds its hash at position {}, and extends it intact to position {} ({})",
            checkpoint.position,
            head.position,
            hex::encode(head.hash)
        );
        return Ok(());
    }
    let mut client = audit_client(cli).await?;
    let reply = client
        .verify_checkpoint(audit::VerifyCheckpointRequest {
            checkpoint: Some(checkpoint),
        })
        .await?
        .into_inner();
    print(
        &reply,
        "signpost.audit.v1.VerifyCheckpointResponse",
        cli.json,
    );
    if !(reply.signature_valid && reply.log_extends_checkpoint) {
        anyhow::bail!("checkpoint NOT verified: {}", reply.problem);
    }
    Ok(())
}

/// Runs `signpost log ...`.
pub async fn run_log(cli: &Cli, command: &LogCommand) -> anyhow::Result<()> {
    let LogCommand::Export { output, from } = command;
    let token = crate::cli::api_token(cli)?;
    let mut client = EventLogServiceClient::with_interceptor(
        crate::cli::channel(&cli.server).await?,
        interceptor(&token, None)?,
    )
    .max_decoding_message_size(64 << 20);
    let mut stream = client
        .subscribe(eventlog::SubscribeRequest {
            from_position: *from,
            event_types: vec![],
        })
        .await?
        .into_inner();
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(output).with_context(|| format!("creating {}", output.display()))?,
    );
    let mut bar: Option<ProgressBar> = None;
    let mut stop_at = None;
    let mut count = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let target = *stop_at.get_or_insert(batch.head);
        let bar =
            bar.get_or_insert_with(|| progress_bar(target.saturating_sub(*from) + 1, "exporting"));
        let events: Vec<_> = batch
            .events
            .into_iter()
            .filter(|e| e.position <= target)
            .collect();
        count += signpost_audit::write_log_export(&mut out, events)?;
        bar.set_position(batch.position.min(target).saturating_sub(*from) + 1);
        if batch.position >= target {
            break;
        }
    }
    out.flush()?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    eprintln!("exported {count} events to {}", output.display());
    Ok(())
}
