//! The real Firestore emulator through its REST API.

use agentorg_testkit::{firestore_or_skip, FirestoreEmulator};

#[test]
fn shared_emulator_answers() {
    let Some(fs) = firestore_or_skip!() else {
        return;
    };
    let response = fs.request("GET", "/", None).expect("GET /");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(fs.endpoint(), format!("http://{}", fs.host_port()));
    // The same emulator for the whole test binary.
    let again = FirestoreEmulator::shared().expect("shared again");
    assert_eq!(again.host_port(), fs.host_port());
}

#[test]
fn create_read_reset() {
    let Some(fs) = firestore_or_skip!() else {
        return;
    };
    let project = fs.unique_project();
    let collection = format!("/v1/projects/{project}/databases/(default)/documents/things");

    let created = fs
        .request(
            "POST",
            &format!("{collection}?documentId=x"),
            Some(r#"{"fields":{"a":{"integerValue":"1"}}}"#),
        )
        .expect("create");
    assert_eq!(created.status, 200, "{created:?}");

    let read = fs
        .request("GET", &format!("{collection}/x"), None)
        .expect("read");
    assert_eq!(read.status, 200, "{read:?}");
    assert!(
        read.body.contains(r#""integerValue": "1""#),
        "{}",
        read.body
    );

    fs.reset(&project).expect("reset");
    let gone = fs
        .request("GET", &format!("{collection}/x"), None)
        .expect("read again");
    assert_eq!(gone.status, 404, "{gone:?}");
}

#[test]
fn unique_projects_are_valid_and_differ() {
    let Some(fs) = firestore_or_skip!() else {
        return;
    };
    let a = fs.unique_project();
    let b = fs.unique_project();
    assert_ne!(a, b);
    for p in [&a, &b] {
        assert!(p.len() <= 30 && p.len() >= 6, "{p}");
        assert!(p.starts_with(|c: char| c.is_ascii_lowercase()), "{p}");
        assert!(
            p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{p}"
        );
        assert!(!p.ends_with('-'), "{p}");
    }
}

#[test]
fn private_emulator_stops_on_drop() {
    let Some(fs) = firestore_or_skip!(FirestoreEmulator::start()) else {
        return;
    };
    let host_port = fs.host_port();
    let log = fs.log_path().expect("started by the kit").to_path_buf();
    let clone = fs.clone();
    assert_eq!(fs.request("GET", "/", None).expect("GET /").status, 200);
    drop(fs);
    // A clone keeps it alive.
    assert_eq!(
        clone
            .request("GET", "/", None)
            .expect("GET / via clone")
            .status,
        200
    );
    drop(clone);
    assert!(
        std::net::TcpStream::connect(&host_port).is_err(),
        "{host_port} still open"
    );
    assert!(!log.exists(), "directory removed: {}", log.display());
}
