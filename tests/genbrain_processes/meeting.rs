//! The fourth scenario of `genbrain_processes`: the architecture review,
//! its facilitator SIGKILLed holding its ballot (see the test's docs).

use super::*;

/// The architecture review, its facilitator killed holding its ballot (see
/// the module's docs).
pub(crate) async fn meeting_scenario(exe: &Path, nats: &NatsServer, firestore: &FirestoreEmulator) {
    const MEETING: &str = "meeting-2026-0423-arch-review";
    let t0 = Instant::now();
    let (mut org, store) = processes(exe, nats, firestore, "0").await;
    // Held far longer than the test waits: only the kill ends attempt 1.
    org.start_with("cto", &["--hold-ballot-ms", "600000"]);
    for role in ["backend", "frontend", "devops", "cso"] {
        org.start(role);
    }
    org.start_with("founder", &["--meeting", "--roles", "ceo"]);

    until(
        "the cto to hold its ballot",
        Duration::from_secs(60),
        || async {
            org.read("cto.1.log")
                .contains("cto holds its ballot")
                .then_some(())
        },
    )
    .await;
    let ballots = format!("agentorg/genbrain/meetings/{MEETING}/ballots");
    until(
        "the four other ballots in the store",
        Duration::from_secs(30),
        || async { (docs(&store, &ballots).await.len() == 4).then_some(()) },
    )
    .await;
    org.kill9("cto");
    eprintln!(
        "{NAME}: {:.1} s: meeting {MEETING} voting, four ballots cast: SIGKILLed the cto",
        t0.elapsed().as_secs_f64()
    );
    org.start("cto");

    let status = org
        .wait_founder(FOUNDER_TIMEOUT + Duration::from_secs(30))
        .await;
    assert!(status.success(), "the founder's process failed: {status}");
    let printed: Value =
        serde_json::from_str(&org.read("founder.stdout")).expect("the founder printed the record");
    assert_eq!(printed["meeting_id"], MEETING, "{printed:#}");
    assert_eq!(
        printed["votes"],
        serde_json::json!({"cto": "approve", "backend": "approve", "cso": "approve_with_conditions",
                           "devops": "approve", "frontend": "abstain"}),
        "{printed:#}"
    );
    // Once, in the store: five ballots with their votes, five voters, each
    // turn recorded once.
    let cast = docs(&store, &ballots).await;
    assert_eq!(cast.len(), 5, "{cast:#?}");
    assert!(cast.iter().all(|b| !b["vote"].is_null()), "{cast:#?}");
    let meeting = get(&store, "agentorg/genbrain/meetings", MEETING)
        .await
        .expect("the meeting's document");
    assert_eq!(meeting["status"], "closed", "{meeting:#}");
    let mut voted: Vec<&str> = meeting["voted"]
        .as_array()
        .expect("voters")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    voted.sort_unstable();
    assert_eq!(
        voted,
        ["backend", "cso", "cto", "devops", "frontend"],
        "{meeting:#}"
    );
    let mut turns: Vec<(u64, &str)> = meeting["transcript"]
        .as_array()
        .expect("a transcript")
        .iter()
        .map(|e| {
            (
                e["item"].as_u64().unwrap_or(99),
                e["role"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(turns.len(), 15, "{meeting:#}");
    turns.sort_unstable();
    turns.dedup();
    assert_eq!(turns.len(), 15, "a turn recorded twice: {meeting:#}");
    let killed = org.read("cto.1.log");
    assert!(
        killed.contains("cto holds its ballot") && !killed.contains("cto votes on"),
        "the killed process held its ballot and never cast it:\n{killed}"
    );
    assert!(
        org.read("cto.2.log").contains("cto votes on"),
        "the new cto process cast its ballot"
    );
    for (name, status) in org.terminate_all(Duration::from_secs(30)).await {
        assert!(status.success(), "{name} exited {status} after SIGTERM");
    }
    eprintln!(
        "{NAME}: {:.1} s: meeting scenario done",
        t0.elapsed().as_secs_f64()
    );
}
