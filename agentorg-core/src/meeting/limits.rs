//! A meeting's bounds: what keeps its document under a store's limit, and
//! the checks of a proposal and a vote.

use super::records::Proposal;
use super::rules::Vote;
use super::MeetingError;
use crate::name::Name;

/// The longest text a meeting keeps in a field (a title, an agenda item, a
/// decision, a rationale, an action item, a condition, a reason), in bytes
/// of UTF-8. With the other bounds ([`MAX_PARTICIPANTS`], [`MAX_AGENDA`](super::MAX_AGENDA),
/// [`MAX_ACTION_ITEMS`], [`MAX_CONDITIONS`],
/// [`INLINE_CONTRIBUTION`](super::INLINE_CONTRIBUTION)), a meeting's
/// document stays under 1 MB, below Firestore's 1 MiB limit.
pub const MAX_TEXT: usize = 1_000;

/// The most participants a meeting has.
pub const MAX_PARTICIPANTS: usize = 12;

/// The most action items a proposal has.
pub const MAX_ACTION_ITEMS: usize = 20;

/// The most conditions one `approve_with_conditions` vote sets.
pub const MAX_CONDITIONS: usize = 3;

/// The longest contribution kept whole, in bytes: a longer one is cut
/// there.
pub const MAX_CONTRIBUTION: usize = 64 * 1024;

/// Whether `s` is too long for a meeting's field.
pub(crate) fn too_long(s: &str) -> bool {
    s.len() > MAX_TEXT
}

impl Proposal {
    /// Checks it for a meeting of `participants`: a decision of 1 to
    /// [`MAX_TEXT`] bytes, a rationale and action items of at most that, at
    /// most [`MAX_ACTION_ITEMS`] action items, each for a participant.
    pub fn check(&self, participants: &[Name]) -> Result<(), MeetingError> {
        if self.decision.trim().is_empty() || too_long(&self.decision) || too_long(&self.rationale)
        {
            return Err(invalid(format!(
                "a proposal's decision has 1 to {MAX_TEXT} bytes, its rationale at most {MAX_TEXT}"
            )));
        }
        if self.action_items.len() > MAX_ACTION_ITEMS {
            return Err(invalid(format!(
                "a proposal has at most {MAX_ACTION_ITEMS} action items, not {}",
                self.action_items.len()
            )));
        }
        for a in &self.action_items {
            if !participants.contains(&a.agent) {
                return Err(invalid(format!(
                    "the action item for `{}` is for a role not in the meeting",
                    a.agent
                )));
            }
            if a.task.trim().is_empty() || too_long(&a.task) {
                return Err(invalid(format!("an action item has 1 to {MAX_TEXT} bytes")));
            }
        }
        Ok(())
    }
}

impl Vote {
    /// Checks it: at most [`MAX_CONDITIONS`] conditions, each (and a
    /// rejection's reason) of at most [`MAX_TEXT`] bytes.
    pub fn check(&self) -> Result<(), MeetingError> {
        let texts: Vec<&String> = match self {
            Vote::ApproveWithConditions { conditions } => conditions.iter().collect(),
            Vote::Reject { reason } => vec![reason],
            _ => Vec::new(),
        };
        if texts.len() > MAX_CONDITIONS || texts.iter().any(|t| too_long(t)) {
            return Err(invalid(format!(
                "a vote has at most {MAX_CONDITIONS} conditions, each (and a reason) of at most {MAX_TEXT} bytes"
            )));
        }
        Ok(())
    }
}

/// Bad input, as a meeting error.
pub(crate) fn invalid(message: impl Into<String>) -> MeetingError {
    MeetingError::InvalidInput {
        message: message.into(),
    }
}
