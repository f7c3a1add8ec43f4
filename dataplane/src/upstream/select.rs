//! Which upstream connection a request may use: the design's reuse table as a pure function.

use crate::policy::Reuse;

/// A connection's life-cycle phase, as selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP (or TLS) connect in progress.
    Connecting,
    /// Preface sent; the peer's SETTINGS not yet seen.
    Handshaking,
    /// The peer's SETTINGS seen: streams up to its limit.
    Ready,
    /// GOAWAY received, or request/age limit reached: no new streams.
    Draining,
    Closed,
}

/// One connection as a candidate for a request.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub phase: Phase,
    /// Has carried at least one completed exchange.
    pub proven: bool,
    /// Private to one client connection (`never` mode): the session id.
    pub private_to: Option<u64>,
    /// The client connection whose request caused the dial.
    pub dialed_for: u64,
    /// A stream slot is free under the current limit.
    pub free_slot: bool,
}

/// What the request asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub mode: Reuse,
    /// The client connection's first request.
    pub first: bool,
    pub session: u64,
    /// The first-request rule may be relaxed: a reuse race would surface as an unprocessed
    /// failure that this request's policy retries.
    pub race_is_retried: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Use the candidate at this index.
    Use(usize),
    /// Open a new connection (private to the session in `never` mode).
    Dial { private: bool },
}

fn usable(c: &Candidate, any_phase: bool) -> bool {
    let phase_ok = match c.phase {
        Phase::Ready => true,
        Phase::Connecting | Phase::Handshaking => any_phase,
        Phase::Draining | Phase::Closed => false,
    };
    phase_ok && c.free_slot
}

/// Chooses a connection for `req` among `candidates`, or asks for a new one. The caller decides
/// whether a dial is allowed right now (connection limits) and waits otherwise.
pub fn pick(req: Request, candidates: &[Candidate]) -> Pick {
    let find = |pred: &dyn Fn(&Candidate) -> bool| candidates.iter().position(pred);
    let shared = |c: &Candidate| c.private_to.is_none();
    let found = match req.mode {
        Reuse::Never => find(&|c| c.private_to == Some(req.session) && usable(c, false)),
        Reuse::Safe if req.first && !req.race_is_retried => {
            find(&|c| shared(c) && c.dialed_for == req.session && usable(c, false))
        }
        Reuse::Safe => find(&|c| shared(c) && usable(c, false)),
        Reuse::Aggressive if req.first && !req.race_is_retried => {
            find(&|c| shared(c) && c.proven && usable(c, false))
        }
        Reuse::Aggressive => find(&|c| shared(c) && usable(c, false)),
        // Prefer a connection that is ready; pile onto one still starting only otherwise.
        Reuse::Always => find(&|c| shared(c) && usable(c, false))
            .or_else(|| find(&|c| shared(c) && usable(c, true))),
    };
    match found {
        Some(i) => Pick::Use(i),
        None => Pick::Dial {
            private: req.mode == Reuse::Never,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(phase: Phase, proven: bool, private_to: Option<u64>, dialed_for: u64) -> Candidate {
        Candidate {
            phase,
            proven,
            private_to,
            dialed_for,
            free_slot: true,
        }
    }

    fn req(mode: Reuse, first: bool) -> Request {
        Request {
            mode,
            first,
            session: 7,
            race_is_retried: false,
        }
    }

    #[test]
    fn never_uses_only_private_connections() {
        let shared = conn(Phase::Ready, true, None, 1);
        let mine = conn(Phase::Ready, true, Some(7), 7);
        let theirs = conn(Phase::Ready, true, Some(8), 8);
        assert_eq!(
            pick(req(Reuse::Never, false), &[shared, theirs]),
            Pick::Dial { private: true }
        );
        assert_eq!(
            pick(req(Reuse::Never, true), &[shared, theirs, mine]),
            Pick::Use(2)
        );
    }

    #[test]
    fn safe_first_request_needs_its_own_connection() {
        let proven_shared = conn(Phase::Ready, true, None, 1);
        let own = conn(Phase::Ready, false, None, 7);
        assert_eq!(
            pick(req(Reuse::Safe, true), &[proven_shared]),
            Pick::Dial { private: false }
        );
        assert_eq!(
            pick(req(Reuse::Safe, true), &[proven_shared, own]),
            Pick::Use(1)
        );
        assert_eq!(
            pick(req(Reuse::Safe, false), &[proven_shared]),
            Pick::Use(0)
        );
        let relaxed = Request {
            race_is_retried: true,
            ..req(Reuse::Safe, true)
        };
        assert_eq!(pick(relaxed, &[proven_shared]), Pick::Use(0));
    }

    #[test]
    fn aggressive_first_request_needs_a_proven_connection() {
        let unproven = conn(Phase::Ready, false, None, 1);
        let proven = conn(Phase::Ready, true, None, 2);
        assert_eq!(
            pick(req(Reuse::Aggressive, true), &[unproven]),
            Pick::Dial { private: false }
        );
        assert_eq!(
            pick(req(Reuse::Aggressive, true), &[unproven, proven]),
            Pick::Use(1)
        );
        assert_eq!(
            pick(req(Reuse::Aggressive, false), &[unproven]),
            Pick::Use(0)
        );
    }

    #[test]
    fn always_piles_onto_starting_connections_last() {
        let starting = conn(Phase::Handshaking, false, None, 1);
        let connecting = conn(Phase::Connecting, false, None, 1);
        let ready = conn(Phase::Ready, false, None, 1);
        assert_eq!(
            pick(req(Reuse::Always, true), &[starting, connecting]),
            Pick::Use(0)
        );
        assert_eq!(
            pick(req(Reuse::Always, true), &[starting, ready]),
            Pick::Use(1)
        );
        for mode in [Reuse::Safe, Reuse::Aggressive] {
            assert_eq!(
                pick(req(mode, false), &[starting]),
                Pick::Dial { private: false },
                "{mode:?}"
            );
        }
    }

    #[test]
    fn draining_closed_and_full_connections_are_never_picked() {
        let mut full = conn(Phase::Ready, true, None, 1);
        full.free_slot = false;
        let draining = conn(Phase::Draining, true, None, 1);
        let closed = conn(Phase::Closed, true, None, 1);
        for mode in [Reuse::Never, Reuse::Safe, Reuse::Aggressive, Reuse::Always] {
            assert!(
                matches!(
                    pick(req(mode, false), &[full, draining, closed]),
                    Pick::Dial { .. }
                ),
                "{mode:?}"
            );
        }
    }
}
