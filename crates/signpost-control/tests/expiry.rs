//! The setup-link expiry sweep, on a real segment-file log in a temporary directory:
//! it records `SetupLinkExpired` for exactly the open links past their expiry, in
//! commits of at most `EXPIRY_BATCH` links, and a sweep with nothing to expire appends
//! nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use signpost_control::{
    ControlConfig, ControlPlane, IssueSetupLink, Principal, RequestMeta, Role, SecretBox,
    EXPIRY_BATCH,
};
use signpost_domain::{decode_event, schema, Event};
use signpost_eventlog::{EventEnvelope, EventStore, FileEventStore, FileOptions};
use signpost_outbound::StaticTxtResolver;

fn admin() -> Principal {
    Principal::ApiToken {
        token_id: "test".into(),
        name: "test".into(),
        role: Role::Admin,
        organization_scope: None,
    }
}

async fn whole_log(store: &Arc<dyn EventStore>) -> Vec<EventEnvelope> {
    store.read_range(1, usize::MAX).await.unwrap()
}

#[tokio::test]
async fn the_sweep_expires_exactly_the_open_links_past_their_expiry_in_bounded_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> =
        Arc::new(FileEventStore::open(dir.path(), FileOptions::default()).unwrap());
    let now = Arc::new(Mutex::new(Utc::now()));
    let mut config = ControlConfig::new("https://signpost.test/".parse().unwrap());
    let clock = now.clone();
    config.clock = Arc::new(move || *clock.lock().unwrap());
    let plane = ControlPlane::start(
        store.clone(),
        SecretBox::from_key([5; 32]),
        Arc::new(StaticTxtResolver::new()),
        config,
    )
    .await
    .unwrap();
    let (admin, meta) = (admin(), RequestMeta::default());

    // More due links than one commit takes: each organization gets one open
    // `NEW_CONNECTION` link, with the default lifetime (72 hours) for the first `due`
    // organizations and 30 days for the rest; every tenth organization also holds two
    // links that are not open (one superseded, one revoked).
    let due = EXPIRY_BATCH * 2 + 7;
    let mut expiring = BTreeSet::new();
    let mut long_lived = BTreeSet::new();
    let mut revoked = BTreeSet::new();
    for n in 0..due + 20 {
        let organization = plane
            .create_organization(&admin, &meta, "Firm", &format!("firm-{n}"))
            .await
            .unwrap()
            .value
            .organization
            .id
            .to_string();
        let lifetime_seconds = if n < due { 0 } else { 30 * 24 * 3600 };
        let issue = |lifetime_seconds| IssueSetupLink {
            organization_id: organization.clone(),
            intent: schema::SetupIntent::NewConnection,
            connection_id: String::new(),
            recipient_email: "it@example.org".into(),
            lifetime_seconds,
        };
        if n % 10 == 0 {
            // Superseded by the next link, then that one revoked: neither is open.
            let first = plane
                .issue_setup_link(&admin, &meta, &issue(0))
                .await
                .unwrap();
            revoked.insert(first.value.link.link.id.to_string());
            let second = plane
                .issue_setup_link(&admin, &meta, &issue(0))
                .await
                .unwrap();
            let second = second.value.link.link.id.to_string();
            plane
                .revoke_setup_link(&admin, &meta, &second)
                .await
                .unwrap();
            revoked.insert(second);
        }
        let link = plane
            .issue_setup_link(&admin, &meta, &issue(lifetime_seconds))
            .await
            .unwrap()
            .value
            .link
            .link
            .id
            .to_string();
        if n < due {
            expiring.insert(link);
        } else {
            long_lived.insert(link);
        }
    }

    // Nothing is due yet: the sweep appends nothing.
    let head = store.head().position;
    assert_eq!(plane.expire_setup_links().await.unwrap(), 0);
    assert_eq!(store.head().position, head);

    // 73 hours later, the default-lifetime open links are due, and only they.
    let later: DateTime<Utc> = *now.lock().unwrap() + Duration::hours(73);
    *now.lock().unwrap() = later;
    assert_eq!(plane.expire_setup_links().await.unwrap(), due);
    let appended: Vec<EventEnvelope> = whole_log(&store)
        .await
        .into_iter()
        .filter(|e| e.position > head)
        .collect();
    let mut expired = BTreeSet::new();
    for envelope in &appended {
        let Event::SetupLinkExpired(_) = decode_event(&envelope.payload).unwrap() else {
            panic!("the sweep appended {}", envelope.event_type);
        };
        let id = envelope.stream_id.strip_prefix("setup-link-").unwrap();
        assert!(expired.insert(id.to_owned()), "{id} expired twice");
    }
    assert_eq!(expired, expiring);
    assert!(expired.is_disjoint(&revoked) && expired.is_disjoint(&long_lived));
    let mut commits = std::collections::BTreeMap::<u64, usize>::new();
    for envelope in &appended {
        *commits.entry(envelope.commit_last_position).or_default() += 1;
    }
    assert_eq!(commits.len(), due.div_ceil(EXPIRY_BATCH), "{commits:?}");
    assert!(commits.values().all(|&events| events <= EXPIRY_BATCH));

    // Each expired link reads as expired; the others as they were.
    for id in expiring.iter().take(3) {
        let view = plane.get_setup_link(&admin, id).await.unwrap();
        assert_eq!(
            view.link.state,
            signpost_domain::setup_link::LinkState::Expired
        );
    }
    for id in &long_lived {
        let view = plane.get_setup_link(&admin, id).await.unwrap();
        assert!(view.link.is_open(), "{id} is open for 30 days");
    }

    // Swept again: nothing left to record.
    let head = store.head().position;
    assert_eq!(plane.expire_setup_links().await.unwrap(), 0);
    assert_eq!(store.head().position, head);

    // And the long-lived ones in their turn, a month on.
    *now.lock().unwrap() = later + Duration::days(30);
    assert_eq!(plane.expire_setup_links().await.unwrap(), long_lived.len());
}
