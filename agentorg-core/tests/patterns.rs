//! The pattern conformance suite (hierarchy and peers on GenBrain's chart)
//! on the memory backends, on tokio's paused clock: every case of
//! `patterns::CASES` and of `patterns::PAUSED_ONLY`. Also checks the suite's
//! literal of GenBrain's task tree against their published JSON.

use std::sync::Arc;

use agentorg_core::conformance::patterns as suite;
use agentorg_core::store::{MemoryStore, StateStore};
use agentorg_core::transport::{MemoryTransport, Transport};
use serde_json::Value;

fn backends() -> (Arc<dyn Transport>, Arc<dyn StateStore>) {
    (
        Arc::new(MemoryTransport::new()),
        Arc::new(MemoryStore::new()),
    )
}

// Every case of `patterns::CASES`, each a test on its own backends.
agentorg_core::conformance_tests!(patterns, #[tokio::test(start_paused = true)], |org| {
    let (t, s) = backends();
    Some((t, s, ()))
});

// Every case of `patterns::PAUSED_ONLY`: minutes of virtual time.
agentorg_core::conformance_tests!(patterns_paused_only, #[tokio::test(start_paused = true)], |org| {
    let (t, s) = backends();
    Some((t, s, ()))
});

/// GenBrain's task tree, as published in their write-up (a copy of the JSON).
const FIXTURE: &str = include_str!("fixtures/task-tree.json");

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("the fixture is JSON")
}

/// `tree` with the values of `task_id` and `actual_minutes` blanked.
fn without_ids_and_minutes(mut tree: Value) -> Value {
    if let Some(node) = tree.as_object_mut() {
        for key in ["task_id", "actual_minutes"] {
            if let Some(v) = node.get_mut(key) {
                *v = Value::Null;
            }
        }
        if let Some(Value::Array(children)) = node.get_mut("children") {
            for c in children.iter_mut() {
                *c = without_ids_and_minutes(c.take());
            }
        }
    }
    tree
}

/// The suite's literal is GenBrain's tree: same shape, titles, assignees,
/// statuses and SLAs (task ids and minutes aside).
#[test]
fn the_suite_literal_is_genbrains_tree() {
    assert_eq!(
        without_ids_and_minutes(suite::genbrain_task_tree()),
        without_ids_and_minutes(fixture())
    );
    assert_eq!(
        suite::task_tree_mismatch(&suite::genbrain_task_tree(), &fixture()),
        None
    );
}

/// The comparison the suite applies to built trees catches what differs
/// from GenBrain's tree, and lets through only what the runtime adds.
#[test]
fn the_tree_comparison_catches_differences() {
    let seed = suite::genbrain_task_tree();
    let check = |edit: &dyn Fn(&mut Value)| {
        let mut tree = fixture();
        edit(&mut tree);
        suite::task_tree_mismatch(&seed, &tree)
    };
    // What a built tree has and GenBrain's does not: other ids and minutes,
    // `assigned_by` on leaves (the parent's assignee), minutes everywhere.
    assert_eq!(
        check(&|t| {
            t["task_id"] = "01J0000000000000000000000A".into();
            t["actual_minutes"] = 0.into();
            t["children"][0]["children"][0]["actual_minutes"] = 3.into();
            t["children"][0]["children"][0]["assigned_by"] = "cto".into();
            t["children"][1]["assigned_by"] = "ceo".into();
        }),
        None
    );
    type Edit<'a> = &'a dyn Fn(&mut Value);
    let wrong: [(&str, Edit); 8] = [
        ("Build React", &|t| {
            t["children"][0]["children"][1]["title"] = "Build Vue dashboard".into()
        }),
        ("assigned_to", &|t| {
            t["children"][2]["assigned_to"] = "cso".into()
        }),
        ("status", &|t| t["children"][0]["status"] = "failed".into()),
        ("sla_minutes", &|t| {
            t["children"][0]["children"][2]["sla_minutes"] = 60.into()
        }),
        ("assigned_by", &|t| {
            t["children"][1]["assigned_by"] = "cto".into()
        }),
        ("error", &|t| t["children"][1]["error"] = "boom".into()),
        ("2 children", &|t| {
            t["children"].as_array_mut().unwrap().pop();
        }),
        ("appears twice", &|t| {
            t["children"][1]["task_id"] = t["children"][2]["task_id"].clone();
        }),
    ];
    for (expected, edit) in wrong {
        match check(edit) {
            Some(msg) => assert!(msg.contains(expected), "{expected:?} not in {msg:?}"),
            None => panic!("a tree differing in {expected:?} passed"),
        }
    }
}
