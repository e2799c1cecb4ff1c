//! A given/when/then harness for aggregates: given past events, when a command arrives,
//! then these events (or this rejection).
//!
//! Every accepted command is also checked for what must hold of any decision: it ends with
//! its one idempotency record, folding its events keeps the state's invariants, and sending
//! the same command again (same key) after folding yields no events and the same outcome.

use std::fmt::Debug;

use crate::aggregate::{Aggregate, Command};
use crate::rejection::Rejection;

/// What the harness needs to know about an aggregate beyond [`Aggregate`].
pub trait Testable: Aggregate + Debug + PartialEq
where
    Self::Event: Debug + PartialEq,
    Self::Outcome: Debug + PartialEq,
{
    /// Whether the event is an idempotency record of its own (not a business event).
    fn is_command_record(event: &Self::Event) -> bool;
    /// Whether the event ends a decision with its idempotency record: a record of its own,
    /// or a business event that carries one.
    fn ends_decision(event: &Self::Event) -> bool {
        Self::is_command_record(event)
    }
    /// The event as a scenario expects it: without an idempotency record it carries (those
    /// are checked by the harness, not spelled out in each test).
    fn without_record(event: &Self::Event) -> Self::Event {
        event.clone()
    }
    /// Scans the whole state for invariant violations.
    fn audit(&self) -> Result<(), String>;
}

/// Starts a scenario from past events.
pub fn given<A>(events: impl IntoIterator<Item = A::Event>) -> Given<A>
where
    A: Testable,
    A::Event: Debug + PartialEq,
    A::Outcome: Debug + PartialEq,
{
    let mut state = A::default();
    for e in events {
        state.evolve(&e);
    }
    Given { state }
}

/// A state built from past events.
pub struct Given<A> {
    state: A,
}

impl<A> Given<A>
where
    A: Testable,
    A::Event: Debug + PartialEq,
    A::Outcome: Debug + PartialEq,
{
    /// The state the events folded into.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Decides a command against the state.
    pub fn when(self, cmd: Command<A::Command>) -> When<A> {
        let result = self.state.decide(&cmd);
        When {
            state: self.state,
            cmd,
            result,
        }
    }
}

/// The result of a command in a scenario.
pub struct When<A: Aggregate> {
    state: A,
    cmd: Command<A::Command>,
    result: Result<crate::aggregate::Decision<A::Event, A::Outcome>, Rejection>,
}

impl<A> When<A>
where
    A: Testable,
    A::Event: Debug + PartialEq,
    A::Outcome: Debug + PartialEq,
{
    /// Asserts the command was accepted with exactly these business events (the trailing
    /// idempotency record is checked separately), and returns the outcome.
    #[track_caller]
    pub fn then(self, expected: Vec<A::Event>) -> (A::Outcome, A) {
        let (events, outcome, state) = self.accepted();
        let business: Vec<_> = events
            .iter()
            .filter(|e| !A::is_command_record(e))
            .map(A::without_record)
            .collect();
        assert_eq!(business, expected, "unexpected events");
        (outcome, state)
    }

    /// Asserts the command was accepted and returns its events (idempotency record
    /// included), outcome and the state after folding them.
    #[track_caller]
    pub fn accepted(self) -> (Vec<A::Event>, A::Outcome, A) {
        let decision = match self.result {
            Ok(d) => d,
            Err(r) => panic!(
                "expected the command to be accepted, got {} ({r})",
                r.code()
            ),
        };
        let mut state = self.state;
        assert!(
            decision.events.last().is_some_and(A::ends_decision),
            "a decision must end with its idempotency record: {:?}",
            decision.events
        );
        for e in &decision.events {
            state.evolve(e);
        }
        if let Err(violation) = state.audit() {
            panic!("invariant broken after {:?}: {violation}", decision.events);
        }
        let again = state
            .decide(&self.cmd)
            .unwrap_or_else(|r| panic!("a retried command was refused: {r}"));
        assert!(
            again.events.is_empty(),
            "a retry produced events: {:?}",
            again.events
        );
        assert_eq!(
            decision
                .events
                .iter()
                .filter(|e| A::ends_decision(e))
                .count(),
            1,
            "a decision has exactly one idempotency record: {:?}",
            decision.events
        );
        assert_eq!(
            again.outcome, decision.outcome,
            "a retry answered differently"
        );
        (decision.events, decision.outcome, state)
    }

    /// Asserts the command was rejected with this code, and returns the rejection.
    #[track_caller]
    pub fn rejected(self, code: &str) -> Rejection {
        match self.result {
            Ok(d) => panic!(
                "expected {code}, but the command was accepted: {:?}",
                d.events
            ),
            Err(r) => {
                assert_eq!(r.code(), code, "wrong rejection: {r}");
                assert!(!r.to_string().is_empty());
                r
            }
        }
    }
}
