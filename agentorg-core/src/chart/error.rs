//! Errors of the org chart: refused charts and refused delegations.

use std::fmt;
use std::path::PathBuf;

use crate::name::NameError;
use crate::tools::ToolGrantError;

/// An org chart was refused, or could not be read.
///
/// Every variant names the offending role; charts loaded from TOML also carry
/// the 1-based `line` of the offending value (`None` for charts built in
/// code), and the message says "line N" when it is known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChartError {
    /// An org, principal, role or task-type name is not a valid [`Name`](crate::Name).
    #[error("{source}{}", at(.line))]
    InvalidName {
        /// Why the name was refused; it holds the name.
        source: NameError,
        /// Where the name is.
        line: Option<usize>,
    },
    /// The chart declares no principal.
    #[error("the org chart declares no principal")]
    MissingPrincipal,
    /// A reporting line, peer channel, shortcut or alternate names a role the
    /// chart does not declare.
    #[error("unknown role `{role}` in {referenced_by}{}", at(.line))]
    UnknownRole {
        /// The unknown role.
        role: String,
        /// What refers to it, e.g. "reports_to of `cto`", "peer channel with
        /// `backend`", "shortcut from `ceo`", "alternate of `backend`".
        referenced_by: String,
        /// Where the reference is.
        line: Option<usize>,
    },
    /// Something is declared twice.
    #[error("duplicate {what} `{name}`{}", at(.line))]
    Duplicate {
        /// What is declared twice: "role", "peer channel" or "shortcut".
        what: &'static str,
        /// The role, or the channel (`a <-> b`) or shortcut (`from -> to`).
        name: String,
        /// Where the second declaration is.
        line: Option<usize>,
    },
    /// Reporting lines loop and never reach the principal.
    #[error("reporting lines loop through `{role}` and never reach the principal{}", at(.line))]
    Cycle {
        /// A role in the loop.
        role: String,
        /// Where that role's `reports_to` is.
        line: Option<usize>,
    },
    /// A role other than the principal reports to no one.
    #[error("role `{role}` has no reports_to (only the principal reports to no one){}", at(.line))]
    NoManager {
        /// The role.
        role: String,
        /// Where the role is declared.
        line: Option<usize>,
    },
    /// The principal is declared as a role (and so given a manager).
    #[error("the principal `{role}` reports to no one and cannot be declared as a role{}", at(.line))]
    PrincipalReports {
        /// The principal.
        role: String,
        /// Where it is declared as a role.
        line: Option<usize>,
    },
    /// A peer channel, shortcut or alternate points a role at itself.
    #[error("`{role}` is paired with itself{}", at(.line))]
    SelfChannel {
        /// The role.
        role: String,
        /// Where the pairing is.
        line: Option<usize>,
    },
    /// A shortcut delegates to the principal, who only receives escalations.
    #[error("shortcut from `{role}` delegates to the principal, who takes no tasks{}", at(.line))]
    DelegatesToPrincipal {
        /// The role the shortcut starts at.
        role: String,
        /// Where the shortcut's `to` is.
        line: Option<usize>,
    },
    /// A role's `meets` names the principal, who takes part in no meeting.
    #[error("`meets` of `{role}` names the principal, who takes part in no meeting{}", at(.line))]
    MeetsPrincipal {
        /// The role whose `meets` it is.
        role: String,
        /// Where the name is.
        line: Option<usize>,
    },
    /// A tool grant of a role could not be parsed.
    #[error("role `{role}`{}: {source}", at(.line))]
    InvalidToolGrant {
        /// The role.
        role: String,
        /// Why the grant was refused.
        source: ToolGrantError,
        /// Where the grant is.
        line: Option<usize>,
    },
    /// A role's alternate cannot take its tasks.
    #[error("`{alternate}` cannot be the alternate of `{role}`: {reason}{}", at(.line))]
    InvalidAlternate {
        /// The role.
        role: String,
        /// Its declared alternate.
        alternate: String,
        /// Why the alternate was refused.
        reason: &'static str,
        /// Where the alternate is.
        line: Option<usize>,
    },
    /// An event name, subscription pattern or event schema is not valid.
    #[error("{}event `{event}`{}: {reason}", role.as_ref().map(|r| format!("role `{r}`: ")).unwrap_or_default(), at(.line))]
    InvalidEvent {
        /// The role that declares it, if a role does.
        role: Option<String>,
        /// The name or pattern.
        event: String,
        /// What is wrong.
        reason: String,
        /// Its line in the TOML file.
        line: Option<usize>,
    },
    /// A chain or saga is malformed: no steps, a step's role unknown, a
    /// rollback or gate event its role does not publish, ….
    #[error("invalid saga `{saga}`{}: {reason}", at(.line))]
    InvalidSaga {
        /// The saga's name.
        saga: String,
        /// What is wrong.
        reason: String,
        /// Its line in the TOML file.
        line: Option<usize>,
    },
    /// The TOML text is malformed, has an unknown field, or a value of the
    /// wrong type.
    #[error("invalid org chart TOML{}: {message}", at(.line))]
    Toml {
        /// The parser's message.
        message: String,
        /// Where the parser stopped, when it knows.
        line: Option<usize>,
    },
    /// The chart file could not be read.
    #[error("cannot read org chart {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// `" (line N)"` when the line is known.
fn at(line: &Option<usize>) -> impl fmt::Display {
    struct At(Option<usize>);
    impl fmt::Display for At {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self.0 {
                Some(n) => write!(f, " (line {n})"),
                None => Ok(()),
            }
        }
    }
    At(*line)
}

/// Why a delegation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The delegator is not in the chart.
    UnknownSender,
    /// The delegate is not in the chart.
    UnknownReceiver,
    /// The delegate is not a direct report of the delegator, and no shortcut
    /// from the delegator to it covers the task type.
    NoRoute,
}

/// A delegation the chart does not allow; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationRefused {
    /// The delegator, as given.
    pub from: String,
    /// The intended delegate, as given.
    pub to: String,
    /// The task type, if one was given.
    pub task_type: Option<String>,
    /// Which rule refused it.
    pub reason: RefusalReason,
}

impl fmt::Display for DelegationRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { from, to, .. } = self;
        write!(f, "`{from}` may not delegate to `{to}`: ")?;
        match self.reason {
            RefusalReason::UnknownSender => write!(f, "`{from}` is not in the org chart"),
            RefusalReason::UnknownReceiver => write!(f, "`{to}` is not in the org chart"),
            RefusalReason::NoRoute => {
                write!(f, "`{to}` is not a direct report of `{from}` and no shortcut lets `{from}` delegate ")?;
                match &self.task_type {
                    Some(t) => write!(f, "`{t}` tasks to `{to}`"),
                    None => write!(f, "untyped tasks to `{to}`"),
                }
            }
        }
    }
}

impl std::error::Error for DelegationRefused {}
