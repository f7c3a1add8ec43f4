//! The retry engine. Each attempt is a fresh value built from the immutable request head and the
//! shared replay buffer; the decision to retry is a pure function of the policy, the attempt's
//! outcome and what is left (attempts, body, deadline, budget). Nothing is retried once a
//! response has been handed downstream: a response is only handed over after this loop ends.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response};
use tokio::time::Instant;

use super::body::ProxyBody;
use super::replay::Replay;
use crate::metrics::SkipReason;
use crate::policy::{BackendPolicy, NonIdempotent, RetryPolicy};
use crate::table::Protocol;
use crate::upstream::{AttemptError, BackendPool, Failure, SafetyClass, Want};

/// Methods whose repetition has the same effect as one request (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// What one attempt came back with, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    Failure(Failure),
    Status(u16),
}

impl Cause {
    fn class(self) -> SafetyClass {
        match self {
            Cause::Failure(f) => f.class(),
            // The backend answered: it processed the request.
            Cause::Status(_) => SafetyClass::PossiblyProcessed,
        }
    }

    fn wanted(self, policy: &RetryPolicy) -> bool {
        match self {
            Cause::Failure(f) => f.condition().is_some_and(|c| policy.retries_on(c)),
            Cause::Status(code) => policy.retries_status(code),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Retry,
    /// No condition asks for a retry, or no attempts are left.
    Stop,
    /// A condition asked for a retry, but this stopped it.
    Skip(SkipReason),
}

/// What remains for another attempt.
pub(crate) struct Room {
    pub(crate) attempts_made: u32,
    pub(crate) idempotent: bool,
    pub(crate) replayable: bool,
    pub(crate) before_deadline: bool,
}

/// The decision, without side effects but the budget withdrawal (asked last, only when
/// everything else allows a retry).
pub(crate) fn decide(
    policy: &RetryPolicy,
    cause: Cause,
    room: &Room,
    budget: impl FnOnce() -> bool,
) -> Verdict {
    if room.attempts_made >= policy.attempts || !cause.wanted(policy) {
        return Verdict::Stop;
    }
    if !room.idempotent {
        let allowed = match policy.non_idempotent {
            NonIdempotent::Never => false,
            NonIdempotent::UnprocessedOnly => cause.class() == SafetyClass::Unprocessed,
            NonIdempotent::Always => true,
        };
        if !allowed {
            return Verdict::Skip(SkipReason::NonIdempotent);
        }
    }
    if !room.replayable {
        return Verdict::Skip(SkipReason::BodyTooLarge);
    }
    if !room.before_deadline {
        return Verdict::Skip(SkipReason::Deadline);
    }
    if !budget() {
        return Verdict::Skip(SkipReason::Budget);
    }
    Verdict::Retry
}

/// One attempt, for the access log.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct AttemptRecord {
    pub(crate) endpoint: Option<SocketAddr>,
    /// A status code, or the failure.
    pub(crate) outcome: String,
    pub(crate) class: &'static str,
    /// `retried`, `returned` or the reason a retry was skipped.
    pub(crate) action: &'static str,
}

impl AttemptRecord {
    /// `refused-stream/unprocessed/retried`
    pub(crate) fn summary(&self) -> String {
        format!("{}/{}/{}", self.outcome, self.class, self.action)
    }
}

pub(crate) enum Outcome {
    Response(Response<ProxyBody>),
    Failed(AttemptError),
}

/// Full-jitter exponential backoff for the retry after `attempts_made` attempts.
fn backoff(policy: &RetryPolicy, attempts_made: u32) -> Duration {
    let exp = policy
        .backoff
        .base
        .saturating_mul(1u32 << attempts_made.saturating_sub(1).min(16));
    let ceiling = exp.min(policy.backoff.max);
    let random = RandomState::new().build_hasher().finish();
    let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(if nanos == 0 { 0 } else { random % (nanos + 1) })
}

/// Everything one request brings to the retry loop.
pub(crate) struct Exchange<'a> {
    pub(crate) pool: &'a Arc<BackendPool>,
    pub(crate) policy: Arc<BackendPolicy>,
    pub(crate) head: http::request::Parts,
    pub(crate) replay: Replay,
    pub(crate) want: Want<'a>,
    pub(crate) start: Instant,
}

/// Whether the reuse race (a backend closing a connection as it is reused) would surface as a
/// failure this request's policy retries: then the first-request rule may be relaxed.
pub(crate) fn race_is_retried(policy: &BackendPolicy, protocol: Protocol, method: &Method) -> bool {
    let retry = &policy.retry;
    match protocol {
        // On HTTP/2 the race shows as GOAWAY or REFUSED_STREAM: unprocessed.
        Protocol::H2c | Protocol::H2 => retry.retries_on(crate::policy::RetryOn::Unprocessed),
        // On HTTP/1.1 it shows as a connection closed with no response.
        Protocol::Http1 | Protocol::Https => {
            retry.retries_on(crate::policy::RetryOn::EmptyResponse)
                && (is_idempotent(method) || retry.non_idempotent == NonIdempotent::Always)
        }
    }
}

pub(crate) async fn run(ex: Exchange<'_>) -> (Outcome, Vec<AttemptRecord>) {
    let Exchange {
        pool,
        policy,
        head,
        replay,
        want,
        start,
    } = ex;
    let retry = &policy.retry;
    let deadline = policy.timeouts.request.map(|d| start + d);
    let idempotent = is_idempotent(&head.method);
    pool.budget.deposit();
    let mut records = Vec::new();
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut attempts_made = 0;
    loop {
        attempts_made += 1;
        let avoid: &[SocketAddr] = if retry.redispatch { &tried } else { &[] };
        let Some(endpoint) = pool.pick_endpoint(avoid) else {
            let e = AttemptError::new(Failure::NoEndpoints, None, "");
            return (Outcome::Failed(e), records);
        };
        tried.push(endpoint.addr);
        // Pinned once, so the state of this loop holds one attempt (not one per branch).
        let attempt =
            std::pin::pin!(pool.attempt(&endpoint, &want, &policy, &head, replay.attempt()));
        let per_try = retry.per_try_timeout.map(|t| Instant::now() + t);
        let limit = match (per_try, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let result = match limit {
            None => attempt.await,
            Some(at) => match tokio::time::timeout_at(at, attempt).await {
                Ok(r) => r,
                Err(_) => {
                    pool.metrics.attempt_failed(Failure::ResponseTimeout);
                    Err(AttemptError::new(
                        Failure::ResponseTimeout,
                        Some(endpoint.addr),
                        "no response headers in time",
                    ))
                }
            },
        };
        let (cause, outcome) = match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (Cause::Status(status), Outcome::Response(resp))
            }
            Err(e) => (Cause::Failure(e.failure), Outcome::Failed(e)),
        };
        let room = Room {
            attempts_made,
            idempotent,
            replayable: replay.replayable(),
            before_deadline: deadline.is_none_or(|d| Instant::now() < d),
        };
        let verdict = decide(retry, cause, &room, || {
            pool.budget.try_withdraw(&retry.budget)
        });
        let outcome_label = match cause {
            Cause::Status(code) => code.to_string(),
            Cause::Failure(f) => f.label().to_string(),
        };
        let action = match verdict {
            Verdict::Retry => "retried",
            Verdict::Stop => "returned",
            Verdict::Skip(reason) => reason.label(),
        };
        records.push(AttemptRecord {
            endpoint: Some(endpoint.addr),
            outcome: outcome_label.clone(),
            class: cause.class().label(),
            action,
        });
        match verdict {
            Verdict::Retry => {
                let reason = match cause {
                    Cause::Status(code) => format!("status-{code}"),
                    Cause::Failure(f) => f.label().to_string(),
                };
                pool.metrics.retry(&reason);
                tracing::debug!(service = %pool.key(), attempt = attempts_made, outcome = %outcome_label, "retrying");
                // The failed attempt's response (if any) is dropped here: its stream is reset.
                drop(outcome);
                let pause = backoff(retry, attempts_made);
                match deadline {
                    Some(d) => tokio::time::sleep_until((Instant::now() + pause).min(d)).await,
                    None => tokio::time::sleep(pause).await,
                }
            }
            Verdict::Skip(reason) => {
                pool.metrics.retry_skipped(reason);
                return (outcome, records);
            }
            Verdict::Stop => return (outcome, records),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RetryOn;

    fn room(attempts_made: u32, idempotent: bool) -> Room {
        Room {
            attempts_made,
            idempotent,
            replayable: true,
            before_deadline: true,
        }
    }

    fn policy(when: &[RetryOn]) -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            when: when.to_vec(),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn unprocessed_is_retried_for_every_method() {
        let p = policy(&[RetryOn::Unprocessed]);
        for f in [
            Failure::RefusedStream,
            Failure::GoAway,
            Failure::ClosedBeforeSettings,
            Failure::Connect,
            Failure::NotSent,
        ] {
            assert_eq!(
                decide(&p, Cause::Failure(f), &room(1, false), || true),
                Verdict::Retry,
                "{f:?}"
            );
        }
    }

    #[test]
    fn possibly_processed_needs_idempotence_unless_always() {
        let p = policy(&[RetryOn::Reset, RetryOn::GatewayError]);
        let reset = Cause::Failure(Failure::Reset);
        assert_eq!(decide(&p, reset, &room(1, true), || true), Verdict::Retry);
        assert_eq!(
            decide(&p, reset, &room(1, false), || true),
            Verdict::Skip(SkipReason::NonIdempotent)
        );
        assert_eq!(
            decide(&p, Cause::Status(503), &room(1, false), || true),
            Verdict::Skip(SkipReason::NonIdempotent)
        );
        let always = RetryPolicy {
            non_idempotent: NonIdempotent::Always,
            ..p.clone()
        };
        assert_eq!(
            decide(&always, reset, &room(1, false), || true),
            Verdict::Retry
        );
        let never = RetryPolicy {
            non_idempotent: NonIdempotent::Never,
            when: vec![RetryOn::Unprocessed],
            ..p
        };
        let refused = Cause::Failure(Failure::RefusedStream);
        assert_eq!(
            decide(&never, refused, &room(1, false), || true),
            Verdict::Skip(SkipReason::NonIdempotent)
        );
    }

    #[test]
    fn conditions_not_configured_stop() {
        let p = policy(&[RetryOn::Unprocessed]);
        assert_eq!(
            decide(&p, Cause::Failure(Failure::Reset), &room(1, true), || true),
            Verdict::Stop
        );
        assert_eq!(
            decide(&p, Cause::Status(503), &room(1, true), || true),
            Verdict::Stop
        );
        assert_eq!(
            decide(&p, Cause::Status(200), &room(1, true), || true),
            Verdict::Stop
        );
        assert_eq!(
            decide(
                &p,
                Cause::Failure(Failure::PoolExhausted),
                &room(1, true),
                || true
            ),
            Verdict::Stop
        );
        let codes = RetryPolicy {
            codes: vec![429],
            ..p
        };
        assert_eq!(
            decide(&codes, Cause::Status(429), &room(1, true), || true),
            Verdict::Retry
        );
    }

    #[test]
    fn limits_in_order_attempts_body_deadline_budget() {
        let p = policy(&[RetryOn::Unprocessed]);
        let refused = Cause::Failure(Failure::RefusedStream);
        assert_eq!(decide(&p, refused, &room(3, true), || true), Verdict::Stop);
        let body = Room {
            replayable: false,
            ..room(1, true)
        };
        assert_eq!(
            decide(&p, refused, &body, || true),
            Verdict::Skip(SkipReason::BodyTooLarge)
        );
        let late = Room {
            before_deadline: false,
            ..room(1, true)
        };
        assert_eq!(
            decide(&p, refused, &late, || true),
            Verdict::Skip(SkipReason::Deadline)
        );
        assert_eq!(
            decide(&p, refused, &room(1, true), || false),
            Verdict::Skip(SkipReason::Budget)
        );
        // The budget is not asked when something else already stops the retry.
        assert_eq!(
            decide(&p, refused, &body, || panic!("budget asked")),
            Verdict::Skip(SkipReason::BodyTooLarge)
        );
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy::default();
        for n in 1..10 {
            assert!(backoff(&p, n) <= p.backoff.max);
        }
    }
}
