//! Containment of panics in one call's media handling (the str0m browser leg, the SIP-side
//! bridge, the call's timers): a bug there, or an input that trips one, ends that call, never
//! the process or the other calls.
//!
//! # Contract
//! [`Gateway::contained`] runs a piece of call `id`'s work under `catch_unwind`. When it panics:
//! - the panic is logged once at error level (the panic hook prints its own line too);
//! - the call is ended as by any failure: `terminated` with [`INTERNAL_ERROR_REASON`] to its
//!   connection, the SIP leg hung up (BYE, CANCEL, or 480 for a ringing incoming call), its
//!   timers stopped and its RTP/RTCP pair released;
//! - whatever the panic interrupted, no table keeps a trace of the call (sessions, legs, media
//!   sockets, demux, timers): [`Gateway::sweep_call`] removes every entry that still names it.
//!
//! Outputs the interrupted work had already queued (datagrams) still go out; they are harmless.
//! Under `cfg(fuzzing)` the panic is re-raised, so the fuzz targets still find it.
//! Signalling paths (requests, SIP events) are not contained: a panic there is a bug in state
//! every call shares.

use super::calls::table::CallTimer;
use super::Gateway;
use crate::api::{Event, SessionEvent, SessionState};
use crate::call::CallId;
use crate::ids::ConnId;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The reason in `terminated` when a call's media handling panicked.
pub const INTERNAL_ERROR_REASON: &str = "500 Internal error";

/// Faults tests inject (feature `fault-injection`, which only dev-dependencies turn on); empty
/// otherwise, and nothing in a runtime arms them.
#[derive(Debug, Default)]
pub(super) struct Faults {
    /// The session whose next media handling panics (once).
    #[cfg(any(test, feature = "fault-injection"))]
    media_panic: Option<String>,
}

/// The text of a panic's payload.
fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

impl Gateway {
    /// Runs `work`, part of call `id`'s media handling (`what` names it for the log); a panic
    /// inside ends that call (see the module's contract) and returns normally.
    pub(super) fn contained(&mut self, id: CallId, what: &str, work: impl FnOnce(&mut Self)) {
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.injected_fault(id);
            work(self)
        }));
        if let Err(payload) = result {
            if cfg!(fuzzing) {
                // A fuzzer must see the panic, not its containment.
                std::panic::resume_unwind(payload);
            }
            log::error!("{id}: panic in {what}: {}; ending the call", panic_text(payload.as_ref()));
            self.end_call(id, INTERNAL_ERROR_REASON, true);
            // The panic may have interrupted the call's own ending: its session still gets its
            // one `terminated`.
            for (conn, session) in self.sweep_call(id) {
                let state = SessionState::Terminated { reason: INTERNAL_ERROR_REASON.into() };
                self.send_event(conn, &Event::Session { session, event: SessionEvent::State(state) });
                self.flush(conn);
            }
        }
    }

    /// Removes every table entry that still names call `id` (after a panic interrupted work that
    /// may have left some): sessions, SIP legs (hung up), media sockets (released), the demux,
    /// timers. A no-op for a call properly dropped. Returns the sessions it removed.
    fn sweep_call(&mut self, id: CallId) -> Vec<(ConnId, String)> {
        if self.calls.calls.remove(&id).is_some() {
            log::error!("{id}: still in the call table after it ended; removed");
        }
        let sessions: Vec<_> =
            self.calls.sessions.iter().filter(|&(_, c)| *c == id).map(|(key, _)| key.clone()).collect();
        for key in &sessions {
            self.calls.sessions.remove(key);
        }
        let legs: Vec<_> = self.calls.legs.iter().filter(|&(_, c)| *c == id).map(|(leg, _)| *leg).collect();
        for leg in legs {
            self.calls.legs.remove(&leg);
            self.sip.hang_up(leg, self.now, &mut self.rng);
        }
        let sockets: Vec<_> = self.calls.sockets.iter().filter(|&(_, c)| *c == id).map(|(s, _)| *s).collect();
        for rtp in sockets {
            self.calls.sockets.remove(&rtp);
            self.release_rtp_pair(rtp);
        }
        self.calls.demux.remove(id);
        self.calls.timers.stop_range((id, CallTimer::FIRST)..=(id, CallTimer::LAST));
        sessions
    }

    /// Test builds: panics if a test armed a fault for call `id`'s session.
    #[cfg(any(test, feature = "fault-injection"))]
    fn injected_fault(&mut self, id: CallId) {
        let Some(session) = &self.faults.media_panic else { return };
        if self.calls.calls.get(&id).is_some_and(|c| &c.session == session) {
            let session = self.faults.media_panic.take().unwrap_or_default();
            panic!("injected fault in the media of session {session}");
        }
    }

    /// Production builds: no fault can be armed.
    #[cfg(not(any(test, feature = "fault-injection")))]
    fn injected_fault(&mut self, _id: CallId) {
        let Faults {} = &self.faults;
    }

    /// Test only: the next media handling (datagram or call timer) of session `session` panics,
    /// once, to prove containment.
    #[cfg(any(test, feature = "fault-injection"))]
    #[doc(hidden)]
    pub fn inject_media_panic(&mut self, session: &str) {
        self.faults.media_panic = Some(session.to_string());
    }
}
