//! The task tree as one value, read back from the task records.

use std::collections::HashSet;

use super::records::{read_task, Layout, TaskStatus};
use crate::envelope::TaskId;
use crate::name::Name;
use crate::runtime::Kernel;
use crate::store::StoreError;

/// Trees deeper than this are cut (a guard against corrupted documents).
const MAX_TREE_DEPTH: usize = 64;

/// A task and its subtasks, in the shape of GenBrain's task tree (fields in
/// this order when serialized; empty or unknown ones left out).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct TaskTree {
    /// The task's id.
    pub task_id: TaskId,
    /// What it was.
    pub title: String,
    /// Who delegated it.
    pub assigned_by: Name,
    /// Who did it.
    pub assigned_to: Name,
    /// How it stands.
    pub status: TaskStatus,
    /// Its subtasks, in delegation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TaskTree>,
    /// Its SLA in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_minutes: Option<u64>,
    /// How long it took, in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_minutes: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TaskTree {
    /// The number of tasks in the tree.
    pub fn len(&self) -> usize {
        1 + self.children.iter().map(TaskTree::len).sum::<usize>()
    }

    /// Always false: a tree has at least its root.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether every task of the tree completed.
    pub fn all_completed(&self) -> bool {
        self.status == TaskStatus::Completed && self.children.iter().all(TaskTree::all_completed)
    }

    /// Every task of the tree, depth first.
    pub fn iter(&self) -> impl Iterator<Item = &TaskTree> {
        let mut stack = vec![self];
        std::iter::from_fn(move || {
            let node = stack.pop()?;
            stack.extend(node.children.iter().rev());
            Some(node)
        })
    }
}

/// Reads the tree under `root`.
pub(crate) async fn read(kernel: &Kernel, root: &TaskId) -> Result<TaskTree, StoreError> {
    let mut seen = HashSet::new();
    tree(kernel, root, &mut seen, 0).await
}

fn tree<'a>(
    shared: &'a Kernel,
    id: &'a TaskId,
    seen: &'a mut HashSet<TaskId>,
    depth: usize,
) -> futures::future::BoxFuture<'a, Result<TaskTree, StoreError>> {
    Box::pin(async move {
        let Some((rec, _)) = read_task(shared, id).await? else {
            return Err(StoreError::NotFound {
                key: Layout::of(shared)?.task(id)?.to_string(),
            });
        };
        seen.insert(id.clone());
        let mut children = Vec::new();
        if depth < MAX_TREE_DEPTH {
            for child in &rec.children {
                if !seen.contains(child) {
                    children.push(tree(shared, child, seen, depth + 1).await?);
                }
            }
        }
        Ok(TaskTree {
            task_id: rec.task_id,
            title: rec.title,
            assigned_by: rec.assigned_by,
            assigned_to: rec.assigned_to,
            status: rec.status,
            children,
            sla_minutes: rec.sla_minutes,
            actual_minutes: rec.actual_minutes,
            error: rec.error,
        })
    })
}
