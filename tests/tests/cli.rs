//! The README walk-through with the `signpost` CLI, against the real binary
//! serving on loopback.

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;
use signpost_e2e::*;

/// Runs the CLI against one server with the bootstrap token file.
struct Cli {
    server: String,
    token_file: PathBuf,
}

impl Cli {
    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(signpost_binary!())
            .arg("--server")
            .arg(&self.server)
            .arg("--token-file")
            .arg(&self.token_file)
            .args(args)
            .env_remove("SIGNPOST_TOKEN")
            .env_remove("SIGNPOST_SERVER")
            .env_remove("SIGNPOST_TOKEN_FILE")
            .output()
            .await
            .expect("run the signpost CLI")
    }

    /// Runs a command that must succeed; returns its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "signpost {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs a command with `--json`; returns the parsed reply.
    async fn json(&self, args: &[&str]) -> Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let stdout = self.ok(&with_json).await;
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

/// The README's example metadata files.
fn example(file: &str) -> String {
    format!("{}/../deploy/examples/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// The real binary with the TEST-ONLY loopback switch, and a CLI for it.
async fn server_and_cli(dir: &tempfile::TempDir) -> (ChildServer, Cli) {
    let server = ChildServer::start(
        signpost_binary!(),
        dir.path(),
        &["--test-only-allow-loopback-http-idp"],
    )
    .await;
    let cli = Cli {
        server: format!("http://{}", server.addr),
        token_file: dir.path().join("bootstrap-admin.token"),
    };
    (server, cli)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walk_through_runs_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir).await;
    let idp = FakeIdp::start("https://idp.acme.example/entity").await;

    // 1. The firm and its domain.
    let created = cli
        .json(&[
            "org",
            "create",
            "--name",
            "Acme Law",
            "--external-id",
            "acme-001",
        ])
        .await;
    let org = text(&created, "/organization/organization_id").to_owned();
    assert_eq!(text(&created, "/organization/display_name"), "Acme Law");

    let claimed = cli.json(&["domain", "claim", &org, "acme.example"]).await;
    assert_eq!(text(&claimed, "/domain_claim/domain"), "acme.example");
    assert_eq!(
        text(&claimed, "/domain_claim/status"),
        "DOMAIN_STATUS_PENDING"
    );
    assert!(
        text(&claimed, "/domain_claim/verification_value").starts_with("signpost-verification=")
    );

    let verified = cli
        .ok(&[
            "domain",
            "verify",
            &org,
            "acme.example",
            "--manual",
            "called their IT",
            "--on-behalf-of",
            "ops@ourplatform.example",
        ])
        .await;
    assert!(
        verified.contains("status: DOMAIN_STATUS_VERIFIED"),
        "{verified}"
    );
    assert!(verified.contains("ops@ourplatform.example"), "{verified}");

    // 2. A setup link.
    let issued = cli
        .json(&[
            "link",
            "issue",
            &org,
            "--intent",
            "new",
            "--recipient",
            "it@acme.example",
        ])
        .await;
    let url = text(&issued, "/url").to_owned();
    let connection_id = text(&issued, "/setup_link/connection_id").to_owned();
    assert_eq!(
        text(&issued, "/setup_link/recipient_email"),
        "it@acme.example"
    );
    assert!(url.contains("/setup#spl_"), "{url}");

    // 3. The form, as the IT admin sees and submits it.
    let form = cli.ok(&["form", "show", "--link", &url]).await;
    assert!(
        form.contains("organization_display_name: Acme Law"),
        "{form}"
    );
    assert!(
        form.contains(&format!("/sso/saml/{connection_id}/acs")),
        "{form}"
    );
    let submitted = cli
        .json(&[
            "form",
            "submit",
            "--link",
            &url,
            "--preset",
            "okta",
            "--metadata-url",
            &idp.metadata_url(),
            "--groups-claim",
            "groups",
        ])
        .await;
    assert_eq!(text(&submitted, "/connection_id"), connection_id);
    assert_eq!(text(&submitted, "/status"), "CONNECTION_STATUS_CONFIGURED");

    // 4. Groups, activation, policy.
    let assigned = cli
        .json(&[
            "--view",
            "basic",
            "group",
            "assign",
            &connection_id,
            "Lawyers",
            "editor",
        ])
        .await;
    assert_eq!(text(&assigned, "/connection/groups/0/idp_group"), "Lawyers");
    assert_eq!(text(&assigned, "/connection/groups/0/role"), "editor");
    // The basic view leaves the settings and our SP details out; the default shows them.
    assert_eq!(assigned.pointer("/connection/saml"), None, "{assigned}");
    assert_eq!(assigned.pointer("/connection/service_provider"), None);
    let required = cli
        .json(&["group", "require", &connection_id, "true"])
        .await;
    assert_eq!(
        required.pointer("/connection/require_group"),
        Some(&Value::Bool(true))
    );
    assert!(
        required
            .pointer("/connection/service_provider/acs_url")
            .is_some(),
        "{required}"
    );
    cli.ok(&["conn", "activate", &connection_id]).await;
    let policy = cli.ok(&["policy", &org, "enforced"]).await;
    assert!(
        policy.contains("sso_policy: SSO_POLICY_ENFORCED"),
        "{policy}"
    );

    let shown = cli.ok(&["conn", "get", &connection_id]).await;
    assert!(
        shown.contains("status: CONNECTION_STATUS_ACTIVE"),
        "{shown}"
    );
    assert!(
        shown.contains("idp_entity_id: https://idp.acme.example/entity"),
        "{shown}"
    );
    let shown = cli.json(&["conn", "get", &connection_id]).await;
    assert_eq!(
        text(&shown, "/connection/status"),
        "CONNECTION_STATUS_ACTIVE"
    );
    assert_eq!(text(&shown, "/connection/organization_id"), org);

    // 5. The move to Entra ID through a switch link, and back.
    let issued = cli
        .json(&[
            "link",
            "issue",
            &org,
            "--intent",
            "switch",
            "--recipient",
            "it@acme.example",
        ])
        .await;
    let switch_url = text(&issued, "/url").to_owned();
    let staged = cli
        .json(&[
            "form",
            "submit",
            "--link",
            &switch_url,
            "--preset",
            "entra_id",
            "--metadata-file",
            &example("entra-idp-metadata.xml"),
        ])
        .await;
    let new_connection_id = text(&staged, "/connection_id").to_owned();
    assert_eq!(text(&staged, "/status"), "CONNECTION_STATUS_STANDBY");
    let switched = cli
        .json(&["conn", "switch", &org, &new_connection_id])
        .await;
    assert_eq!(
        text(&switched, "/organization/active_connection_id"),
        new_connection_id
    );
    assert_eq!(text(&switched, "/previous_connection_id"), connection_id);
    let listed = cli.json(&["conn", "list", "--org", &org]).await;
    let statuses: Vec<(&str, &str)> = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (text(c, "/connection_id"), text(c, "/status")))
        .collect();
    assert_eq!(statuses.len(), 2, "{listed}");
    assert!(statuses.contains(&(new_connection_id.as_str(), "CONNECTION_STATUS_ACTIVE")));
    assert!(statuses.contains(&(connection_id.as_str(), "CONNECTION_STATUS_INACTIVE")));
    let switched_back = cli.json(&["conn", "switch", &org, &connection_id]).await;
    assert_eq!(
        text(&switched_back, "/organization/active_connection_id"),
        connection_id
    );

    // Tokens for other callers: shown once, listed without the secret.
    let minted = cli
        .json(&["token", "mint", "--name", "edge eu-west", "--role", "edge"])
        .await;
    let token = text(&minted, "/token").to_owned();
    assert!(token.starts_with("spt_"), "{token}");
    let listed = cli.ok(&["token", "list"]).await;
    assert!(listed.contains("edge eu-west"), "{listed}");
    assert!(!listed.contains(&token), "the token list shows a token");

    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_form_submitted_with_the_cli_keeps_the_secret_off_the_command_line_and_the_output()
{
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir).await;
    let idp = FakeIdp::start("https://idp.birch.example/entity").await;
    let org = cli
        .json(&[
            "org",
            "create",
            "--name",
            "Birch",
            "--external-id",
            "birch-1",
        ])
        .await;
    let org = text(&org, "/organization/organization_id").to_owned();
    let url = cli
        .json(&["link", "issue", &org, "--recipient", "it@birch.example"])
        .await;
    let url = text(&url, "/url").to_owned();

    let output = tokio::process::Command::new(signpost_binary!())
        .args([
            "--server",
            &cli.server,
            "--json",
            "form",
            "submit",
            "--link",
            &url,
        ])
        .args(["--preset", "generic_oidc", "--oidc-issuer", &idp.base_url])
        .args(["--client-id", "signpost-client"])
        .env("SIGNPOST_CLIENT_SECRET", "cli-secret-value-456")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let submitted: Value = serde_json::from_slice(&output.stdout).unwrap();
    let connection_id = text(&submitted, "/connection_id").to_owned();
    let shown = cli.json(&["conn", "get", &connection_id]).await;
    assert_eq!(text(&shown, "/connection/oidc/issuer"), idp.base_url);
    assert_eq!(
        shown.pointer("/connection/oidc/client_secret_set"),
        Some(&Value::Bool(true))
    );
    assert!(!shown.to_string().contains("cli-secret-value-456"));

    // Nor does any audit answer the CLI prints mention the secret or the link's token.
    let token = url.rsplit_once('#').unwrap().1.to_owned();
    let export = dir.path().join("export.jsonl");
    let outputs = [
        cli.ok(&["audit", "list", "--org", &org]).await,
        cli.ok(&["--json", "audit", "list", "--org", &org]).await,
        cli.ok(&["audit", "connection-at", &connection_id]).await,
        {
            cli.ok(&["audit", "export", "--output", export.to_str().unwrap()])
                .await;
            std::fs::read_to_string(&export).unwrap()
        },
    ];
    for output in &outputs {
        assert!(
            output.contains("connection.configured") || output.contains(&connection_id),
            "{output}"
        );
        assert!(
            !output.contains("cli-secret-value-456"),
            "the client secret leaked: {output}"
        );
        assert!(
            !output.contains(&token),
            "the setup link token leaked: {output}"
        );
    }
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_cli_command_exits_non_zero_with_the_reason_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = server_and_cli(&dir).await;
    let org = cli
        .json(&[
            "org",
            "create",
            "--name",
            "Cedar",
            "--external-id",
            "cedar-1",
        ])
        .await;
    let org = text(&org, "/organization/organization_id").to_owned();

    let refused = cli.run(&["domain", "claim", &org, "gmail.com"]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("reason: DOMAIN_IS_CONSUMER_MAIL"),
        "{stderr}"
    );
    assert!(stderr.contains("InvalidArgument"), "{stderr}");
    assert!(refused.stdout.is_empty());

    let refused = cli
        .run(&["--json", "domain", "claim", &org, "gmail.com"])
        .await;
    assert!(!refused.status.success());
    let error: Value = serde_json::from_slice(&refused.stderr).unwrap();
    assert_eq!(text(&error, "/error/reason"), "DOMAIN_IS_CONSUMER_MAIL");
    assert_eq!(text(&error, "/error/field"), "domain");

    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_cli_lists_exports_verifies_and_checks_a_checkpoint_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = server_and_cli(&dir).await;
    let org = cli
        .json(&[
            "org",
            "create",
            "--name",
            "Acme",
            "--external-id",
            "acme-audit",
        ])
        .await;
    let org = text(&org, "/organization/organization_id").to_owned();
    cli.ok(&["domain", "claim", &org, "acme-audit.example.com"])
        .await;
    cli.ok(&[
        "domain",
        "verify",
        &org,
        "acme-audit.example.com",
        "--manual",
        "called IT",
    ])
    .await;
    let link = cli
        .json(&[
            "link",
            "issue",
            &org,
            "--recipient",
            "it@acme-audit.example.com",
        ])
        .await;
    let url = text(&link, "/url").to_owned();
    let metadata = example("okta-idp-metadata.xml");
    let submitted = cli
        .json(&[
            "form",
            "submit",
            "--link",
            &url,
            "--metadata-file",
            &metadata,
        ])
        .await;
    let connection = text(&submitted, "/connection_id").to_owned();
    cli.ok(&["conn", "activate", &connection]).await;

    // A readable table by default.
    let table = cli.ok(&["audit", "list", "--org", &org]).await;
    assert!(table.starts_with("POSITION"), "{table}");
    for action in [
        "organization.created",
        "domain.verified",
        "setup_link.issued",
        "connection.configured",
        "connection.activated",
        "setup_link.spent",
    ] {
        assert!(table.contains(action), "{action} missing from\n{table}");
    }
    assert!(
        !table.contains("spl_"),
        "a setup link token leaked into the audit table"
    );

    // JSON Lines and CSV exports hold one record per event of the organization.
    let jsonl_file = dir.path().join("audit.jsonl");
    cli.ok(&[
        "audit",
        "export",
        "--org",
        &org,
        "--output",
        jsonl_file.to_str().unwrap(),
    ])
    .await;
    let jsonl = std::fs::read_to_string(&jsonl_file).unwrap();
    let records: Vec<Value> = jsonl
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(records.len() >= 8, "{jsonl}");
    assert!(records
        .iter()
        .all(|r| r["target"]["organization_id"] == org.as_str()
            || r["target"]["organization_id"].is_null()));
    let csv_file = dir.path().join("audit.csv");
    cli.ok(&[
        "audit",
        "export",
        "--org",
        &org,
        "--format",
        "csv",
        "--output",
        csv_file.to_str().unwrap(),
    ])
    .await;
    let csv = std::fs::read_to_string(&csv_file).unwrap();
    assert!(csv.starts_with("position,time,actor_kind"));
    assert_eq!(csv.lines().count(), records.len() + 1);

    // Verification of the whole chain, and the point-in-time answer.
    let verified = cli.ok(&["audit", "verify"]).await;
    assert!(verified.starts_with("intact:"), "{verified}");
    let at = cli
        .ok(&["audit", "at", "--domain", "acme-audit.example.com"])
        .await;
    assert!(at.contains(&connection), "{at}");

    // A checkpoint verifies offline against an exported log, and a tampered export fails.
    let checkpoint = dir.path().join("checkpoint.json");
    let key = dir.path().join("key.hex");
    let log = dir.path().join("log.pb");
    cli.ok(&[
        "audit",
        "checkpoint",
        "create",
        "--save",
        checkpoint.to_str().unwrap(),
    ])
    .await;
    cli.ok(&[
        "audit",
        "checkpoint",
        "key",
        "--save",
        key.to_str().unwrap(),
    ])
    .await;
    cli.ok(&["log", "export", "--output", log.to_str().unwrap()])
        .await;
    let args = |log: &std::path::Path| {
        vec![
            "audit".to_owned(),
            "checkpoint".into(),
            "verify".into(),
            checkpoint.to_str().unwrap().into(),
            "--offline".into(),
            "--log".into(),
            log.to_str().unwrap().into(),
            "--public-key".into(),
            key.to_str().unwrap().into(),
        ]
    };
    let good: Vec<String> = args(&log);
    let verified = cli
        .ok(&good.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert!(verified.contains("checkpoint verified"), "{verified}");
    let mut bytes = std::fs::read(&log).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let tampered = dir.path().join("tampered.pb");
    std::fs::write(&tampered, bytes).unwrap();
    let bad: Vec<String> = args(&tampered);
    let output = cli
        .run(&bad.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert!(
        !output.status.success(),
        "a tampered export must not verify"
    );
}
