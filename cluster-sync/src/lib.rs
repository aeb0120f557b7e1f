//! Replication of state-machine commands.
//!
//! Today a node applies its own commands ([`SingleNode`]); the cluster issue puts openraft
//! (=0.9.25) behind the same [`Replicator`] trait, so the daemon's code that proposes commands
//! does not change. The rule both keep: a command is acknowledged to the client only after it
//! is durable where the replication mode requires (this node's disk; later, a quorum's), and
//! every node applies the same commands in the same order.
#![forbid(unsafe_code)]

/// The position of a command in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogIndex(pub u64);

/// Applies committed commands. `apply` must be deterministic (same commands in the same
/// order give the same state on every node) and durable when it returns.
pub trait StateMachine: Send + Sync {
    /// A mutation of the state (object put or destroyed, user added, …). It carries key
    /// material only wrapped under the cluster domain key.
    type Command: Send;
    /// Why a command could not be applied.
    type Error: Send;

    /// Applies one committed command.
    ///
    /// # Errors
    /// When the command cannot be made durable; the state is then unchanged.
    fn apply(&self, index: LogIndex, command: Self::Command) -> Result<(), Self::Error>;
}

/// Orders commands and gets them committed.
pub trait Replicator<C>: Send + Sync {
    /// Why a proposal failed.
    type Error;

    /// Proposes a command; returns once it is committed and applied locally.
    ///
    /// # Errors
    /// When the command was not committed; then it is not applied anywhere.
    fn propose(&self, command: C) -> Result<LogIndex, Self::Error>;
}

/// The one-node replicator: commits by applying to the local state machine, in order.
#[derive(Debug)]
pub struct SingleNode<S> {
    machine: S,
    next: std::sync::Mutex<u64>,
}

impl<S> SingleNode<S> {
    /// Wraps a state machine.
    pub fn new(machine: S) -> Self {
        SingleNode {
            machine,
            next: std::sync::Mutex::new(1),
        }
    }

    /// The state machine.
    pub fn machine(&self) -> &S {
        &self.machine
    }
}

impl<S: StateMachine> Replicator<S::Command> for SingleNode<S> {
    type Error = S::Error;

    fn propose(&self, command: S::Command) -> Result<LogIndex, S::Error> {
        // The lock orders commands; a poisoned lock only means another proposal panicked
        // mid-apply, and the counter itself is still consistent.
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let index = LogIndex(*next);
        self.machine.apply(index, command)?;
        *next += 1;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder(Mutex<Vec<(u64, &'static str)>>);

    impl StateMachine for Recorder {
        type Command = &'static str;
        type Error = String;
        fn apply(&self, index: LogIndex, command: &'static str) -> Result<(), String> {
            if command == "bad" {
                return Err("refused".into());
            }
            self.0.lock().unwrap().push((index.0, command));
            Ok(())
        }
    }

    #[test]
    fn single_node_applies_in_order_and_skips_failed_indices() {
        let r = SingleNode::new(Recorder(Mutex::new(Vec::new())));
        assert_eq!(r.propose("a"), Ok(LogIndex(1)));
        assert!(r.propose("bad").is_err());
        assert_eq!(r.propose("b"), Ok(LogIndex(2)));
        assert_eq!(*r.machine().0.lock().unwrap(), vec![(1, "a"), (2, "b")]);
    }
}
