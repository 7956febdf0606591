//! `account-register` answered as SylkServer does (spec §2.2, §5.3): after the next hop's name
//! resolution when the registration needs one: `ack` and the registration's events, or the
//! `error` "DNS lookup error: …" and no registration. The SIP stack resolves on its own (RFC
//! 3263); the gateway sees a lookup start (the stack's count of lookups grows while the request
//! is handled) and the registration's `SipEvent::Resolved` when it ends.

use super::{Conn, Gateway, Phase};
use crate::api::Event;
use crate::client::{Register, SipCtx};
use crate::ids::ConnId;
use crate::sip::stack::RegId;

/// An `account-register` whose registration waits for the name resolution of its next hop:
/// SylkServer resolves before it answers (spec §2.2), so its `ack` (or `error` "DNS lookup
/// error: …") and the registration's events wait too.
pub(super) struct PendingRegister {
    pub(super) conn: ConnId,
    pub(super) request: Register,
    /// The registration's events so far, sent after the `ack`.
    pub(super) held: Vec<Event>,
}

impl Gateway {
    /// Answers an `account-register` whose registration started: `ack` now, or once its next
    /// hop is resolved when it started a lookup (`resolving`).
    pub(super) fn answer_register(&mut self, conn: ConnId, request: Register, resolving: bool) {
        if resolving {
            let reg = request.reg;
            self.pending_registers.insert(reg, PendingRegister { conn, request, held: Vec::new() });
        } else {
            self.send_event(conn, &Event::Ack { transaction: request.transaction });
        }
    }

    /// Registration `reg`'s next hop was resolved: if an `account-register` waits for it, it is
    /// answered (spec §2.2): `ack` and the registration's events, or the `error` "DNS lookup
    /// error: …" (the resolver's error, else "no results found") and the registration is
    /// removed (no events).
    pub(super) fn register_resolved(&mut self, reg: RegId, result: Result<(), Option<String>>) {
        let Some(PendingRegister { conn, request, held, .. }) = self.pending_registers.remove(&reg) else { return };
        let detail = match &result {
            Ok(()) => {
                self.send_event(conn, &Event::Ack { transaction: request.transaction });
                for e in &held {
                    self.send_event(conn, e);
                }
                self.flush(conn);
                return;
            }
            Err(e) => e.as_deref(),
        };
        let error = crate::errors::dns_lookup_error(detail);
        log::info!("{conn}: account-register of {} failed: {error}", request.account);
        if let Some(Conn { phase: Phase::Ws(s), .. }) = self.conns.get_mut(&conn) {
            let mut ctx = SipCtx { sip: &mut self.sip, rng: &mut self.rng, now: self.now, conn, regs: &mut self.regs };
            s.client.registration_refused(&request.account, reg, &mut ctx);
        }
        self.send_event(conn, &Event::Error { transaction: request.transaction, error });
        self.flush(conn);
    }
}
