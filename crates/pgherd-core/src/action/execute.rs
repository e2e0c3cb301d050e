//! The one executor: actions carried out in order, each confirmed, the
//! first failure reported with everything done before it.

use super::{describe, Action};
use crate::error::{Error, Result};

/// What carrying out one action came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done as described.
    Done,
    /// Done, in other words than planned (what was found when it ran).
    DoneAs(Vec<String>),
    /// Nothing turned out to need doing.
    Nothing,
}

/// A failed action: whether it took effect before failing (a reload sent,
/// a service started) decides whether it is reported as done; an action
/// made of steps reports those it did (`partial`) in its own words.
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    pub took_effect: bool,
    pub partial: Vec<String>,
}

impl From<Error> for Failure {
    /// A failure before the action took effect; one that carries what was
    /// done ([`Error::AfterChanges`], from steps within the action) keeps
    /// it as `partial`.
    fn from(error: Error) -> Self {
        match error {
            Error::AfterChanges { done, source } => Failure {
                error: *source,
                took_effect: false,
                partial: done,
            },
            error => Failure {
                error,
                took_effect: false,
                partial: Vec::new(),
            },
        }
    }
}

/// Marks errors met while confirming an action that already took effect.
pub trait Confirming<T> {
    fn confirming(self) -> std::result::Result<T, Failure>;
}

impl<T> Confirming<T> for Result<T> {
    fn confirming(self) -> std::result::Result<T, Failure> {
        self.map_err(|error| Failure {
            took_effect: true,
            ..Failure::from(error)
        })
    }
}

/// Carries out one action and confirms it.
pub trait Executor {
    fn apply(&mut self, action: &Action) -> std::result::Result<Outcome, Failure>;
}

/// Applies `actions` in order; the `changes` lines of what was done. The
/// first failure stops the run and is returned with everything done
/// before it (and the failed action itself when it took effect).
pub fn execute(actions: &[Action], x: &mut impl Executor) -> Result<Vec<String>> {
    let mut done = Vec::new();
    execute_onto(actions, x, &mut done)?;
    Ok(done)
}

/// [`execute`], adding to `done`: what earlier parts of the same run did
/// is reported with a failure too.
pub fn execute_onto(
    actions: &[Action],
    x: &mut impl Executor,
    done: &mut Vec<String>,
) -> Result<()> {
    for action in actions {
        match x.apply(action) {
            Ok(Outcome::Done) => done.extend(action.lines()),
            Ok(Outcome::DoneAs(lines)) => done.extend(lines),
            Ok(Outcome::Nothing) => {}
            Err(Failure {
                error,
                took_effect,
                partial,
            }) => {
                done.extend(partial);
                if took_effect {
                    done.extend(action.lines());
                }
                return Err(error.after(done.clone()));
            }
        }
    }
    Ok(())
}

/// What check mode does with a plan (describe it) and what a real run
/// does (carry it out): the one place the two differ.
pub fn carry_out(
    actions: &[Action],
    check_mode: bool,
    x: &mut impl Executor,
) -> Result<Vec<String>> {
    if check_mode {
        Ok(describe(actions))
    } else {
        execute(actions, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Carries out a script of outcomes, one per action, recording what
    /// it was asked.
    type Step = std::result::Result<Outcome, Failure>;

    struct Script {
        outcomes: Vec<Step>,
        asked: usize,
    }

    impl Executor for Script {
        fn apply(&mut self, _: &Action) -> Step {
            self.asked += 1;
            self.outcomes.remove(0)
        }
    }

    fn start(n: &str) -> Action {
        Action::StartPatroni { node: n.into() }
    }

    fn failed(took_effect: bool) -> Step {
        Err(Failure {
            took_effect,
            ..Error::Other("it broke".into()).into()
        })
    }

    #[test]
    fn the_executor_reports_what_was_done_before_a_failure() {
        let plan = vec![
            start("a"),
            Action::ConfirmHealthy { node: "a".into() },
            start("b"),
            start("c"),
            start("d"),
        ];
        // (outcomes, changes or the error's done list, actions asked)
        let table: Vec<(Vec<Step>, Vec<&str>, bool, usize)> = vec![
            (
                vec![
                    Ok(Outcome::Done),
                    Ok(Outcome::Done),
                    Ok(Outcome::Nothing),
                    Ok(Outcome::DoneAs(vec!["other".into()])),
                    Ok(Outcome::Done),
                ],
                vec!["start Patroni (a)", "other", "start Patroni (d)"],
                true,
                5,
            ),
            (
                vec![Ok(Outcome::Done), Ok(Outcome::Done), failed(false)],
                vec!["start Patroni (a)"],
                false,
                3,
            ),
            (
                vec![Ok(Outcome::Done), Ok(Outcome::Done), failed(true)],
                vec!["start Patroni (a)", "start Patroni (b)"],
                false,
                3,
            ),
            (vec![failed(false)], vec![], false, 1),
        ];
        for (outcomes, lines, ok, asked) in table {
            let mut script = Script { outcomes, asked: 0 };
            let got = execute(&plan, &mut script);
            assert_eq!(script.asked, asked);
            match got {
                Ok(done) => {
                    assert!(ok);
                    assert_eq!(done, lines);
                }
                Err(Error::AfterChanges { done, .. }) => {
                    assert!(!ok);
                    assert_eq!(done, lines);
                }
                Err(e) => {
                    assert!(!ok && lines.is_empty(), "{e}");
                    assert_eq!(e.to_string(), "it broke");
                }
            }
        }
    }
}
