//! The `Ready` condition both kinds carry.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition type the operator sets.
pub const READY: &str = "Ready";

/// Why an object is or is not ready (the condition's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Everything is applied.
    Reconciled,
    /// The ScaledObject could not be written.
    CreateError,
    /// The spec is invalid.
    InvalidSpec,
    /// An older object claims the same host/path/headers.
    RouteConflict,
}

impl Reason {
    /// The reason as written into the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reconciled => "Reconciled",
            Self::CreateError => "CreateError",
            Self::InvalidSpec => "InvalidSpec",
            Self::RouteConflict => "RouteConflict",
        }
    }

    /// Whether the object is ready with this reason.
    pub fn is_ready(self) -> bool {
        self == Self::Reconciled
    }
}

/// The outcome of one reconciliation: the `Ready` condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The reason.
    pub reason: Reason,
    /// The human-readable message.
    pub message: String,
}

impl Outcome {
    /// An outcome with `reason` and `message`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The `Ready` condition for `outcome` at `generation`, keeping `lastTransitionTime` from
/// `previous` unless the status flips.
pub fn ready_condition(
    outcome: &Outcome,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let status = if outcome.reason.is_ready() {
        "True"
    } else {
        "False"
    };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == READY && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: READY.to_owned(),
        status: status.to_owned(),
        reason: outcome.reason.as_str().to_owned(),
        message: outcome.message.clone(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The conditions after setting `ready`: other types are kept, `Ready` is replaced.
pub fn with_ready(previous: &[Condition], ready: Condition) -> Vec<Condition> {
    previous
        .iter()
        .filter(|c| c.type_ != READY)
        .cloned()
        .chain(std::iter::once(ready))
        .collect()
}

/// The `(status, reason)` of the `Ready` condition in `conditions`, if any.
pub fn ready_state(conditions: &[Condition]) -> Option<(&str, &str)> {
    conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_only_changes_when_status_flips() {
        let ok = Outcome::new(Reason::Reconciled, "fine");
        let first = ready_condition(&ok, Some(1), &[]);
        assert_eq!(
            (first.status.as_str(), first.reason.as_str()),
            ("True", "Reconciled")
        );
        assert_eq!(first.observed_generation, Some(1));

        let mut old = first.clone();
        old.last_transition_time = Time(Timestamp::from_second(1_000).unwrap());
        let again = ready_condition(&ok, Some(2), std::slice::from_ref(&old));
        assert_eq!(again.last_transition_time, old.last_transition_time);
        assert_eq!(again.observed_generation, Some(2));

        let bad = Outcome::new(Reason::RouteConflict, "taken");
        let flipped = ready_condition(&bad, Some(2), &[old.clone()]);
        assert_eq!(flipped.status, "False");
        assert_ne!(flipped.last_transition_time, old.last_transition_time);

        // A reason change without a status flip keeps the time.
        let mut old_bad = flipped.clone();
        old_bad.last_transition_time = Time(Timestamp::from_second(2_000).unwrap());
        let invalid = Outcome::new(Reason::InvalidSpec, "nope");
        let c = ready_condition(&invalid, Some(3), &[old_bad.clone()]);
        assert_eq!(c.last_transition_time, old_bad.last_transition_time);
        assert_eq!(c.reason, "InvalidSpec");
    }

    #[test]
    fn with_ready_replaces_only_ready() {
        let other = Condition {
            type_: "Other".into(),
            status: "True".into(),
            reason: "X".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::now()),
        };
        let ready = ready_condition(&Outcome::new(Reason::Reconciled, ""), None, &[]);
        let merged = with_ready(&[other.clone(), ready.clone()], ready.clone());
        assert_eq!(merged, vec![other, ready]);
        assert_eq!(ready_state(&merged), Some(("True", "Reconciled")));
    }
}
