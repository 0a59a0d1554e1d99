//! The founder's checks after the tree: exactly-once counters, the contract
//! change, the deploy event's receipts, and (with Firestore) the tree read
//! back.

use std::time::Duration;

use agentorg::envelope::MessageId;
use agentorg::events::ReceiptStatus;
use agentorg::prelude::*;
use agentorg::runtime::role_collection;
use agentorg::store::{StateStore, StateStoreExt};
use serde_json::json;

use super::{Args, CHANGELOG, PEER_MESSAGES, WORK};

/// Reads every task of `tree` back from Firestore over a new connection, and
/// says where the tree lives. Fails unless all are there, as in the tree.
#[cfg(feature = "firestore")]
pub(crate) async fn read_back_from_firestore(
    args: &Args,
    org: &agentorg::Name,
    tree: &TaskTree,
) -> anyhow::Result<bool> {
    use agentorg::store::{DocKey, StateStore as _};
    let Some(host_port) = &args.firestore else {
        return Ok(true);
    };
    let store = agentorg::firestore::FirestoreStore::builder()
        .with_project_id(&args.project)
        .with_emulator(host_port)
        .build()
        .await?;
    let collection = format!("agentorg/{org}/tasks");
    let mut found = 0;
    for task in tree.iter() {
        let key = DocKey::new(&collection, task.task_id.as_str())?;
        match store.get(&key).await? {
            Some(doc) if doc.value["status"] == serde_json::to_value(task.status)? => found += 1,
            Some(doc) => eprintln!(
                "genbrain: {key} in Firestore has status {}",
                doc.value["status"]
            ),
            None => eprintln!("genbrain: {key} is missing from Firestore"),
        }
    }
    let root = DocKey::new(&collection, tree.task_id.as_str())?;
    eprintln!(
        "genbrain: read {found} of {} task documents back from Firestore: project {}, collection {collection} (root {})",
        tree.len(),
        args.project,
        store.document_name(&root),
    );
    Ok(found == tree.len())
}

#[cfg(not(feature = "firestore"))]
pub(crate) async fn read_back_from_firestore(
    _: &Args,
    _: &agentorg::Name,
    _: &TaskTree,
) -> anyhow::Result<bool> {
    Ok(true)
}

/// Whether every task of `tree` was counted exactly once in its role's
/// [`WORK`]; says which tasks were committed by a later attempt.
pub(crate) async fn counted_once(
    store: &dyn StateStore,
    org: &Name,
    tree: &TaskTree,
) -> anyhow::Result<bool> {
    let mut once = 0;
    let mut retried = Vec::new();
    for task in tree.iter() {
        let key = role_collection(org, &task.assigned_to, WORK)?.doc(task.task_id.as_str())?;
        let doc = store.get(&key).await?;
        let count = doc.as_ref().and_then(|d| d.value["count"].as_u64());
        match count {
            Some(1) => once += 1,
            other => eprintln!(
                "genbrain: task {} of {} counted {} times",
                task.task_id,
                task.assigned_to,
                other.unwrap_or(0)
            ),
        }
        let attempt = doc.as_ref().and_then(|d| d.value["attempt"].as_u64());
        if let Some(a @ 2..) = attempt {
            retried.push(format!("{}'s on attempt {a}", task.assigned_to));
        }
    }
    eprintln!(
        "genbrain: exactly-once bookkeeping: {once} of {} tasks counted once{}",
        tree.len(),
        if retried.is_empty() {
            String::new()
        } else {
            format!(" (committed by a retry: {})", retried.join(", "))
        }
    );
    Ok(once == tree.len())
}

/// Waits up to `limit` for Frontend's receipt of the contract change that
/// Backend's task of `tree` sent; whether it came, once.
pub(crate) async fn contract_change_handled(
    store: &dyn StateStore,
    org: &Name,
    tree: &TaskTree,
    limit: Duration,
) -> anyhow::Result<bool> {
    let Some(backend) = tree.iter().find(|t| t.assigned_to == "backend") else {
        eprintln!("genbrain: the tree has no backend task");
        return Ok(false);
    };
    let collection = role_collection(org, &Name::new("frontend")?, PEER_MESSAGES)?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let receipts: Vec<_> = store
            .list_all(&collection)
            .await?
            .into_iter()
            .filter(|d| d.value["cause"].as_str() == Some(backend.task_id.as_str()))
            .collect();
        if let [receipt] = receipts.as_slice() {
            let count = receipt.value["count"].as_u64().unwrap_or(0);
            eprintln!(
                "genbrain: frontend handled backend's api_contract_change (message {}) {}",
                receipt.key.id(),
                if count == 1 {
                    "exactly once".to_owned()
                } else {
                    format!("{count} times")
                }
            );
            return Ok(count == 1);
        }
        if receipts.len() > 1 {
            eprintln!(
                "genbrain: backend's task sent {} api_contract_change messages, not one",
                receipts.len()
            );
            return Ok(false);
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "genbrain: frontend did not handle backend's api_contract_change within {limit:?}"
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints the receipts of DevOps' `deploy.complete` event (waiting up to
/// `limit` for every subscriber) as `{"receipts": …}` on stdout; whether
/// every subscriber processed it, and Marketing wrote its post once.
pub(crate) async fn deploy_receipts(
    org: &Org,
    org_name: &Name,
    tree: &TaskTree,
    limit: Duration,
) -> anyhow::Result<bool> {
    let devops = match tree.iter().find(|t| t.assigned_to == "devops") {
        Some(t) => org.principal().task(&t.task_id).await?,
        None => None,
    };
    let id = devops
        .as_ref()
        .and_then(|t| t.result.as_ref())
        .and_then(|r| r["deploy_event"].as_str())
        .map(str::parse::<MessageId>);
    let Some(Ok(id)) = id else {
        eprintln!("genbrain: devops' result names no deploy event");
        return Ok(false);
    };
    let receipts = org.principal().receipts(&id).wait(limit).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "receipts": receipts }))?
    );
    let processed: Vec<String> = receipts
        .receipts
        .iter()
        .filter(|r| r.status == ReceiptStatus::Processed)
        .map(|r| format!("{} in {} ms", r.subscriber, r.latency_ms))
        .collect();
    eprintln!(
        "genbrain: {} {id} processed by {}{}",
        receipts.name,
        if processed.is_empty() {
            "no one".to_owned()
        } else {
            processed.join(", ")
        },
        if receipts.all_processed() {
            String::new()
        } else {
            format!("; NOT by {:?}", receipts.not_processed)
        }
    );
    let key = role_collection(org_name, &Name::new("marketing")?, CHANGELOG)?.doc(id.as_str())?;
    let post = org.store().get(&key).await?;
    let once = post.as_ref().and_then(|d| d.value["count"].as_u64()) == Some(1);
    match &post {
        Some(doc) if once => eprintln!(
            "genbrain: marketing's changelog post, written once: {}",
            doc.value["post"]
        ),
        Some(doc) => eprintln!(
            "genbrain: marketing's changelog post counted {}",
            doc.value["count"]
        ),
        None => eprintln!("genbrain: marketing wrote no changelog post for {id}"),
    }
    Ok(receipts.all_processed() && once)
}
