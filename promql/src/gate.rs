//! Admission, cancellation and the threads expressions are evaluated on.
//!
//! - **Admission.** At most `max_concurrency` queries from clients run at once
//!   (`--query.max-concurrency`, as in Prometheus); the rest wait, and the wait counts
//!   against their timeout. Rule evaluation does not wait here: a crowd of slow client
//!   queries cannot hold alerts back.
//! - **Evaluation off the async runtime.** Loading runs on the runtime (it awaits the
//!   database); evaluation, which only computes, runs on a thread of its own with a large
//!   stack, so it never stalls the runtime's workers that answer remote_write. Client
//!   queries' threads run at a lower CPU priority (nice [`CLIENT_NICE`]), so that however
//!   many of them are busy, ingest and rule evaluation are scheduled first.
//! - **Cancellation.** A [`Cancel`] is checked inside the evaluation loops (every step of a
//!   range query, every step of a subquery). It trips at the query's deadline, when its
//!   caller goes away (the client hung up, the timeout fired) and when the collector stops
//!   ([`QueryGate::stop`]), so no evaluation outlives its answer by more than one step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::QueryError;

/// Stack of an evaluation thread. Evaluation recurses once per level of the expression
/// (bounded by `query.max_depth`); the memory is only reserved, and touched as used.
const EVAL_STACK: usize = 64 << 20;

/// CPU niceness of the threads that evaluate client queries.
pub const CLIENT_NICE: i32 = 10;

/// Shared by every query of one collector.
pub struct QueryGate {
    slots: tokio::sync::Semaphore,
    max_concurrency: usize,
    stopping: AtomicBool,
    stopped: tokio::sync::Notify,
}

impl std::fmt::Debug for QueryGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryGate")
            .field("max_concurrency", &self.max_concurrency)
            .field("stopping", &self.stopping.load(Ordering::Relaxed))
            .finish()
    }
}

/// Which lane a query takes through the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A client's query: waits for a slot, evaluates at a lower CPU priority.
    Client,
    /// Rule evaluation: takes no slot, evaluates at normal priority.
    Rules,
}

impl QueryGate {
    /// A gate letting `max_concurrency` client queries run at once.
    pub fn new(max_concurrency: usize) -> Arc<QueryGate> {
        Arc::new(QueryGate {
            slots: tokio::sync::Semaphore::new(max_concurrency.max(1)),
            max_concurrency: max_concurrency.max(1),
            stopping: AtomicBool::new(false),
            stopped: tokio::sync::Notify::new(),
        })
    }

    /// Cancels every running and waiting query and refuses new ones (the collector is
    /// stopping).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stopped.notify_waiters();
        self.slots.close();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Waits for a slot for a query in `lane` (none for rules).
    pub(crate) async fn admit(
        &self,
        lane: Lane,
    ) -> Result<Option<tokio::sync::SemaphorePermit<'_>>, QueryError> {
        if self.is_stopping() {
            return Err(stopping());
        }
        if lane == Lane::Rules {
            return Ok(None);
        }
        let stopped = self.stopped.notified();
        tokio::select! {
            p = self.slots.acquire() => p.map(Some).map_err(|_| stopping()),
            _ = stopped => Err(stopping()),
        }
    }
}

fn stopping() -> QueryError {
    QueryError::Unavailable("query cancelled: the collector is stopping".to_owned())
}

/// Whether a query should stop; cheap enough to ask at every step.
#[derive(Clone)]
pub struct Cancel {
    deadline: Instant,
    gate: Option<Arc<QueryGate>>,
    abandoned: Arc<AtomicBool>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Cancel {
    /// Trips `timeout` from now, or when `gate` stops.
    pub fn new(timeout: Duration, gate: Option<Arc<QueryGate>>) -> Cancel {
        let now = Instant::now();
        Cancel {
            deadline: now
                .checked_add(timeout)
                .unwrap_or(now + Duration::from_secs(86400 * 365)),
            gate,
            abandoned: Arc::new(AtomicBool::new(false)),
        }
    }

    /// `Err` once the query should stop.
    pub fn check(&self) -> Result<(), QueryError> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Err(QueryError::Timeout("expression evaluation"));
        }
        if self.gate.as_ref().is_some_and(|g| g.is_stopping()) {
            return Err(stopping());
        }
        if Instant::now() >= self.deadline {
            return Err(QueryError::Timeout("expression evaluation"));
        }
        Ok(())
    }

    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }
}

/// Trips a [`Cancel`] when dropped armed: the future waiting for an evaluation went away.
struct AbandonOnDrop(Option<Cancel>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.abandon();
        }
    }
}

/// Runs `f` on an evaluation thread of its own and waits for its answer. The thread runs
/// at a lower priority for [`Lane::Client`]. Dropping the returned future trips `cancel`,
/// so the thread stops at its next check.
pub(crate) async fn evaluate<T: Send + 'static>(
    lane: Lane,
    cancel: &Cancel,
    f: impl FnOnce(&Cancel) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let token = cancel.clone();
    let mut guard = AbandonOnDrop(Some(cancel.clone()));
    let spawned = std::thread::Builder::new()
        .name("query".to_owned())
        .stack_size(EVAL_STACK)
        .spawn(move || {
            if lane == Lane::Client {
                lower_priority();
            }
            let _ = tx.send(f(&token));
        });
    if let Err(e) = spawned {
        return Err(QueryError::Unavailable(format!(
            "cannot start a query thread: {e}"
        )));
    }
    let answer = rx.await;
    guard.0 = None;
    answer.unwrap_or_else(|_| {
        Err(QueryError::Internal(
            "query evaluation failed unexpectedly (see the collector's log)".to_owned(),
        ))
    })
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux a priority set for "this process" applies to the calling thread alone.
    if let Err(e) = rustix::process::setpriority_process(None, CLIENT_NICE) {
        tracing::debug!(error = %e, "cannot lower the priority of a query thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopped_gate_cancels_running_and_waiting_queries() {
        let gate = QueryGate::new(1);
        let held = gate.admit(Lane::Client).await.expect("slot");
        assert!(held.is_some());
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.admit(Lane::Client).await.map(|_| ()) })
        };
        let cancel = Cancel::new(Duration::from_secs(60), Some(gate.clone()));
        assert!(cancel.check().is_ok());
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.stop();
        assert!(matches!(cancel.check(), Err(QueryError::Unavailable(_))));
        let w = waiting.await.expect("joins");
        assert!(matches!(w, Err(QueryError::Unavailable(_))), "{w:?}");
        assert!(gate.admit(Lane::Rules).await.is_err());
    }

    #[tokio::test]
    async fn an_evaluation_stops_at_its_deadline_and_when_abandoned() {
        let cancel = Cancel::new(Duration::from_millis(50), None);
        let began = Instant::now();
        let r: Result<(), _> = evaluate(Lane::Client, &cancel, |c| {
            loop {
                c.check()?;
                std::hint::spin_loop();
            }
        })
        .await;
        assert!(matches!(r, Err(QueryError::Timeout(_))), "{r:?}");
        assert!(began.elapsed() < Duration::from_secs(5));

        let cancel = Cancel::new(Duration::from_secs(3600), None);
        let (tx, rx) = std::sync::mpsc::channel();
        let fut = evaluate(Lane::Rules, &cancel, move |c| {
            let r = loop {
                if let Err(e) = c.check() {
                    break e;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            let _ = tx.send(r.to_string());
            Ok(())
        });
        let _ = tokio::time::timeout(Duration::from_millis(30), fut).await;
        let why = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("thread stopped");
        assert!(why.contains("timed out"), "{why}");
    }
}
