//! Meetings: the fifth coordination pattern, for decisions that need
//! several agents' input (GenBrain's "schedule_agent_meeting").
//!
//! **Built so far: the vote.** A meeting's decision is taken by a declared
//! [`VotingRule`]: a quorum (votes cast, abstentions included; by default
//! more than half the participants), a simple majority or unanimity, veto
//! roles whose rejection rejects, and what a tie does (the facilitator's
//! own vote decides, or the meeting escalates). [`VotingRule::tally`]
//! counts the [`Vote`]s — `approve`, `approve_with_conditions`, `reject`,
//! `abstain`, as in the meeting record — into a [`Tally`]. The chart
//! declares whom a role may call into a meeting it facilitates
//! (`meets`, [`OrgChart::may_meet`](crate::chart::OrgChart::may_meet)).
//!
//! Not yet: the meeting itself (the durable state machine of agenda,
//! speaking turns, sealed ballots and the stored record), its action items
//! as tasks, the MCP seat's turns and ballots, `genbrain --meeting`.
//!
//! ```
//! use std::collections::BTreeMap;
//! use agentorg_core::meeting::{TallyResult, Vote, VotingRule};
//! use agentorg_core::Name;
//!
//! let n = |s: &str| Name::new(s).unwrap();
//! let people = ["cto", "backend", "frontend", "devops", "cso"].map(n);
//! let votes = BTreeMap::from([
//!     (n("cto"), Vote::Approve),
//!     (n("backend"), Vote::Approve),
//!     (n("frontend"), Vote::Abstain),
//!     (n("devops"), Vote::Approve),
//!     (n("cso"), Vote::ApproveWithConditions {
//!         conditions: vec!["Encryption-at-rest audit before production launch".into()],
//!     }),
//! ]);
//! let tally = VotingRule::majority().tally(&people, &n("cto"), &votes);
//! assert_eq!(tally.result, TallyResult::Approved);
//! assert_eq!((tally.approve, tally.approve_with_conditions, tally.abstain), (3, 1, 1));
//! // The CSO holds a veto, and rejects instead:
//! let mut votes = votes;
//! votes.insert(n("cso"), Vote::Reject { reason: "PII unencrypted".into() });
//! let tally = VotingRule::majority().veto([n("cso")]).tally(&people, &n("cto"), &votes);
//! assert_eq!(tally.result, TallyResult::Vetoed { by: n("cso") });
//! ```

mod rules;

pub use rules::{Majority, Tally, TallyResult, TieBreak, Vote, VotingRule};
