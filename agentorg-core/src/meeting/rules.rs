//! Votes and the declared rule that tallies them: quorum, majority or
//! unanimity, veto roles, and what a tie does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::name::Name;

/// A participant's vote on the facilitator's proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "vote", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Vote {
    /// For the proposal.
    Approve,
    /// For it, on conditions (each one becomes, or is linked to, an action
    /// item).
    ApproveWithConditions {
        /// The conditions.
        conditions: Vec<String>,
    },
    /// Against it.
    Reject {
        /// Why.
        reason: String,
    },
    /// Neither: counts toward the quorum, not toward the majority.
    Abstain,
}

impl Vote {
    /// Its name in the meeting record: `approve`, `approve_with_conditions`,
    /// `reject` or `abstain`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::ApproveWithConditions { .. } => "approve_with_conditions",
            Self::Reject { .. } => "reject",
            Self::Abstain => "abstain",
        }
    }

    /// Whether it is for the proposal (with conditions or not).
    pub fn is_for(&self) -> bool {
        matches!(self, Self::Approve | Self::ApproveWithConditions { .. })
    }
}

/// How many votes carry a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Majority {
    /// More votes for than against (abstentions aside).
    #[default]
    Simple,
    /// No vote against, and at least one for.
    Unanimity,
}

/// What a tie (as many for as against) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TieBreak {
    /// The facilitator's own vote decides (if it abstained or is absent,
    /// the meeting escalates).
    #[default]
    Facilitator,
    /// The meeting escalates to the facilitator's manager.
    Escalate,
}

/// The declared rule of a meeting's vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VotingRule {
    /// How many participants must vote (abstaining counts; absent does
    /// not); `None`: more than half of them.
    pub quorum: Option<usize>,
    /// Majority or unanimity.
    pub majority: Majority,
    /// Roles whose rejection rejects the proposal, whatever the others vote.
    pub veto: Vec<Name>,
    /// What a tie does.
    pub tie: TieBreak,
}

impl Default for VotingRule {
    /// A simple majority, a quorum of more than half the participants, no
    /// veto, the facilitator breaking ties.
    fn default() -> Self {
        Self {
            quorum: None,
            majority: Majority::Simple,
            veto: Vec::new(),
            tie: TieBreak::Facilitator,
        }
    }
}

impl VotingRule {
    /// A simple majority (see [`Default`]).
    pub fn majority() -> Self {
        Self::default()
    }

    /// Unanimity: no vote against.
    pub fn unanimity() -> Self {
        Self {
            majority: Majority::Unanimity,
            ..Self::default()
        }
    }

    /// With this quorum (votes cast, abstentions included).
    pub fn quorum(mut self, votes: usize) -> Self {
        self.quorum = Some(votes);
        self
    }

    /// With these veto roles.
    pub fn veto(mut self, roles: impl IntoIterator<Item = Name>) -> Self {
        self.veto = roles.into_iter().collect();
        self
    }

    /// With this tie-break.
    pub fn tie(mut self, tie: TieBreak) -> Self {
        self.tie = tie;
        self
    }

    /// The quorum for `participants` participants.
    pub fn quorum_of(&self, participants: usize) -> usize {
        self.quorum.unwrap_or(participants / 2 + 1)
    }

    /// Tallies `votes` (by participant; a participant with no vote was
    /// absent) of `participants`, `facilitator` among them.
    pub fn tally(
        &self,
        participants: &[Name],
        facilitator: &Name,
        votes: &BTreeMap<Name, Vote>,
    ) -> Tally {
        let cast: Vec<(&Name, &Vote)> = participants
            .iter()
            .filter_map(|p| votes.get(p).map(|v| (p, v)))
            .collect();
        let count = |f: fn(&Vote) -> bool| cast.iter().filter(|(_, v)| f(v)).count();
        let approve = count(|v| matches!(v, Vote::Approve));
        let with_conditions = count(|v| matches!(v, Vote::ApproveWithConditions { .. }));
        let reject = count(|v| matches!(v, Vote::Reject { .. }));
        let abstain = count(|v| matches!(v, Vote::Abstain));
        let absent = participants
            .iter()
            .filter(|p| !votes.contains_key(*p))
            .cloned()
            .collect();
        let quorum = self.quorum_of(participants.len());
        let (yes, no) = (approve + with_conditions, reject);
        let vetoed_by = cast
            .iter()
            .find(|(p, v)| matches!(v, Vote::Reject { .. }) && self.veto.contains(p))
            .map(|(p, _)| (*p).clone());
        let result = if cast.len() < quorum {
            TallyResult::NoQuorum
        } else if let Some(by) = &vetoed_by {
            TallyResult::Vetoed { by: by.clone() }
        } else {
            match self.majority {
                Majority::Unanimity if no == 0 && yes > 0 => TallyResult::Approved,
                Majority::Unanimity if no > 0 => TallyResult::Rejected,
                Majority::Simple if yes > no => TallyResult::Approved,
                Majority::Simple if no > yes => TallyResult::Rejected,
                // As many for as against (none at all, too).
                _ => match (self.tie, votes.get(facilitator)) {
                    (TieBreak::Facilitator, Some(v)) if v.is_for() => TallyResult::Approved,
                    (TieBreak::Facilitator, Some(Vote::Reject { .. })) => TallyResult::Rejected,
                    _ => TallyResult::Tied,
                },
            }
        };
        Tally {
            approve,
            approve_with_conditions: with_conditions,
            reject,
            abstain,
            absent,
            quorum,
            result,
        }
    }
}

/// What a vote came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TallyResult {
    /// The proposal is decided.
    Approved,
    /// The proposal is rejected.
    Rejected,
    /// A veto role rejected it.
    Vetoed {
        /// The role.
        by: Name,
    },
    /// Fewer votes than the quorum: no decision (the meeting escalates).
    NoQuorum,
    /// A tie the rule leaves undecided: no decision (the meeting
    /// escalates).
    Tied,
}

impl TallyResult {
    /// Whether the meeting decided (approved, or rejected), rather than
    /// escalating for want of a decision.
    pub fn is_decided(&self) -> bool {
        !matches!(self, Self::NoQuorum | Self::Tied)
    }
}

/// The count of a vote, and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Tally {
    /// Votes for.
    pub approve: usize,
    /// Votes for, on conditions.
    pub approve_with_conditions: usize,
    /// Votes against.
    pub reject: usize,
    /// Abstentions.
    pub abstain: usize,
    /// Participants who did not vote.
    pub absent: Vec<Name>,
    /// The quorum applied.
    pub quorum: usize,
    /// What it came to.
    pub result: TallyResult,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn roles(k: usize) -> Vec<Name> {
        (0..k).map(|i| n(&format!("r{i}"))).collect()
    }

    fn votes(vs: &[(&str, Vote)]) -> BTreeMap<Name, Vote> {
        vs.iter().map(|(r, v)| (n(r), v.clone())).collect()
    }

    fn reject() -> Vote {
        Vote::Reject {
            reason: "no".into(),
        }
    }

    /// The write-up's architecture review: four for (one on a condition),
    /// one abstention.
    #[test]
    fn the_architecture_review_is_approved() {
        let people: Vec<Name> = ["cto", "backend", "frontend", "devops", "cso"]
            .map(n)
            .to_vec();
        let cast = votes(&[
            ("cto", Vote::Approve),
            ("backend", Vote::Approve),
            ("frontend", Vote::Abstain),
            ("devops", Vote::Approve),
            (
                "cso",
                Vote::ApproveWithConditions {
                    conditions: vec!["encryption-at-rest audit".into()],
                },
            ),
        ]);
        let t = VotingRule::majority().tally(&people, &n("cto"), &cast);
        assert_eq!(t.result, TallyResult::Approved);
        assert_eq!((t.approve, t.approve_with_conditions, t.abstain), (3, 1, 1));
        assert_eq!(t.quorum, 3);
        // Unanimity too: an abstention is no vote against.
        let t = VotingRule::unanimity().tally(&people, &n("cto"), &cast);
        assert_eq!(t.result, TallyResult::Approved);
    }

    #[test]
    fn each_rule() {
        let people = roles(4);
        let f = n("r0");
        // Majority: 2 for, 1 against, 1 absent (quorum 3 met).
        let cast = votes(&[
            ("r0", Vote::Approve),
            ("r1", Vote::Approve),
            ("r2", reject()),
        ]);
        let t = VotingRule::majority().tally(&people, &f, &cast);
        assert_eq!(t.result, TallyResult::Approved);
        assert_eq!(t.absent, [n("r3")]);
        // Unanimity: one against rejects.
        assert_eq!(
            VotingRule::unanimity().tally(&people, &f, &cast).result,
            TallyResult::Rejected
        );
        // Veto: r2's rejection rejects.
        let rule = VotingRule::majority().veto([n("r2")]);
        assert_eq!(
            rule.tally(&people, &f, &cast).result,
            TallyResult::Vetoed { by: n("r2") }
        );
        // No quorum: 2 of 4 voted, quorum 3.
        let few = votes(&[("r0", Vote::Approve), ("r1", Vote::Abstain)]);
        assert_eq!(
            VotingRule::majority().tally(&people, &f, &few).result,
            TallyResult::NoQuorum
        );
        assert_eq!(
            VotingRule::majority()
                .quorum(2)
                .tally(&people, &f, &few)
                .result,
            TallyResult::Approved
        );
        // A tie: the facilitator's vote decides, or it escalates.
        let tie = votes(&[
            ("r0", reject()),
            ("r1", Vote::Approve),
            ("r2", Vote::Abstain),
        ]);
        assert_eq!(
            VotingRule::majority().tally(&people, &f, &tie).result,
            TallyResult::Rejected
        );
        assert_eq!(
            VotingRule::majority()
                .tie(TieBreak::Escalate)
                .tally(&people, &f, &tie)
                .result,
            TallyResult::Tied
        );
        let tie_without_facilitator = votes(&[
            ("r1", Vote::Approve),
            ("r2", reject()),
            ("r3", Vote::Abstain),
        ]);
        assert_eq!(
            VotingRule::majority()
                .tally(&people, &f, &tie_without_facilitator)
                .result,
            TallyResult::Tied
        );
    }

    #[test]
    fn votes_in_the_record_s_words() {
        let v = Vote::ApproveWithConditions {
            conditions: vec!["audit".into()],
        };
        assert_eq!(v.as_str(), "approve_with_conditions");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["vote"], "approve_with_conditions");
        assert_eq!(serde_json::from_value::<Vote>(json).unwrap(), v);
    }

    fn any_vote() -> impl Strategy<Value = Option<Vote>> {
        prop_oneof![
            Just(None),
            Just(Some(Vote::Approve)),
            Just(Some(Vote::ApproveWithConditions {
                conditions: vec!["c".into()]
            })),
            Just(Some(Vote::Reject { reason: "r".into() })),
            Just(Some(Vote::Abstain)),
        ]
    }

    proptest! {
        /// Abstentions never sway the result once the quorum is met; a
        /// veto role's rejection always rejects; under unanimity an
        /// approval means no vote against; the counts add up.
        #[test]
        fn tally_laws(cast in proptest::collection::vec(any_vote(), 1..9), unanimity: bool, veto in 0usize..9) {
            let people = roles(cast.len());
            let f = people[0].clone();
            let votes: BTreeMap<Name, Vote> = people
                .iter()
                .zip(&cast)
                .filter_map(|(p, v)| v.clone().map(|v| (p.clone(), v)))
                .collect();
            let mut rule = if unanimity { VotingRule::unanimity() } else { VotingRule::majority() };
            let vetoer = people.get(veto).cloned();
            if let Some(v) = &vetoer {
                rule = rule.veto([v.clone()]);
            }
            let t = rule.tally(&people, &f, &votes);
            prop_assert_eq!(t.approve + t.approve_with_conditions + t.reject + t.abstain + t.absent.len(), people.len());
            if votes.len() < t.quorum {
                prop_assert_eq!(&t.result, &TallyResult::NoQuorum);
            } else {
                // The same votes with every abstention dropped, and the
                // quorum lowered to match, come to the same result.
                let kept: BTreeMap<Name, Vote> = votes.iter().filter(|(_, v)| **v != Vote::Abstain).map(|(p, v)| (p.clone(), v.clone())).collect();
                let lower = rule.clone().quorum(kept.len());
                prop_assert_eq!(&lower.tally(&people, &f, &kept).result, &t.result);
            }
            if let Some(v) = &vetoer {
                if matches!(votes.get(v), Some(Vote::Reject { .. })) && votes.len() >= t.quorum {
                    prop_assert_eq!(&t.result, &TallyResult::Vetoed { by: v.clone() });
                }
            }
            if unanimity && t.result == TallyResult::Approved {
                prop_assert_eq!(t.reject, 0);
            }
        }
    }
}
