//! The conference layer's wiring (`crate::conference`): `videoroom-*` requests in, leg timers,
//! WebRTC datagrams no call took, connections going away; its outputs out (events to
//! WebSockets, datagrams from the WebRTC socket, invitations to other connections).

use super::{Conn, Gateway, Phase};
use crate::api::videoroom::VideoroomRequest;
use crate::api::Identity;
use crate::conference::{ConfOutput, Env};
use crate::drive::{Output, Transmit};
use crate::ids::ConnId;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// An [`Env`] from the gateway's parts (a macro: the borrows must stay field by field).
macro_rules! env {
    ($gw:ident, $candidates:expr) => {
        Env {
            now: $gw.now,
            unix: $gw.clock.unix($gw.now),
            rng: &mut $gw.rng,
            cert: $gw.config.webrtc.dtls_cert.as_ref(),
            candidates: $candidates,
            config: &$gw.config.conference,
        }
    };
}

impl Gateway {
    /// A `videoroom-*` request of WebSocket `conn`: answered (`ack`/`error`) with its events.
    /// A sylkRTC-1 connection's (4.1's `videoroom-ctl` era) gets them in 4.1's order and words
    /// (`conference_v1`).
    pub(super) fn videoroom_request(&mut self, conn: ConnId, transaction: String, req: VideoroomRequest) {
        let account = match &req {
            VideoroomRequest::Join { account, .. } => self
                .client(conn)
                .and_then(|c| c.account(account))
                .map(|a| Identity { uri: a.aor.clone(), display_name: a.display_name.clone() }),
            _ => None,
        };
        if self.config.conference.worker_count() > 1 {
            match self.room_route(conn, &req) {
                Err(e) => {
                    log::info!("{conn}: {} refused: {e}", req.kind());
                    let mut error = e.to_string();
                    if self.client(conn).is_some_and(|c| c.dialect == crate::api::Dialect::V1) {
                        error = crate::api::sylkrtc1_videoroom::error_text(&req, &error);
                    }
                    self.send_event(conn, &crate::api::Event::Error { transaction, error });
                    return;
                }
                Ok(Some(worker)) => return self.forward_room_request(conn, worker, &transaction, &req, account),
                Ok(None) => {}
            }
        }
        self.local_videoroom_request(conn, transaction, req, account);
    }

    /// Serves a `videoroom-*` request here, for a local connection or a remote one's alias.
    pub(super) fn local_videoroom_request(
        &mut self,
        conn: ConnId,
        transaction: String,
        req: VideoroomRequest,
        account: Option<Identity>,
    ) {
        // A sylkRTC-1 connection, here or behind a remote alias, gets 4.1's order and words.
        let dialect = match self.client(conn) {
            Some(c) => Some(c.dialect),
            None => self.conferences.remotes.origin(conn).map(|o| o.dialect),
        };
        let v1 = (dialect == Some(crate::api::Dialect::V1)).then(|| req.clone());
        let candidates = self.webrtc_candidates();
        let mut env = env!(self, candidates);
        self.conferences.request(&mut env, conn, transaction.clone(), req, account);
        match v1 {
            Some(req) => self.drain_conferences_v1(conn, &transaction, &req),
            None => self.drain_conferences(),
        }
    }

    /// A datagram on the WebRTC socket that no call took; true if a conference leg did.
    pub(super) fn conference_datagram(&mut self, local: SocketAddr, from: SocketAddr, data: &[u8]) -> bool {
        let mut env = env!(self, None);
        let took = self.conferences.datagram(&mut env, local, from, data);
        self.drain_conferences();
        took
    }

    /// The conference legs' timers.
    pub(super) fn conference_timeout(&mut self) {
        if self.conferences.next_deadline().is_none_or(|at| at > self.now) {
            return;
        }
        let mut env = env!(self, None);
        self.conferences.handle_timeout(&mut env);
        self.drain_conferences();
    }

    /// WebSocket `conn` is gone: it leaves its rooms, here and on the other workers.
    pub(super) fn conference_conn_gone(&mut self, conn: ConnId) {
        self.rooms_conn_gone(conn);
        if !self.conferences.has_conn(conn) {
            return;
        }
        let mut env = env!(self, None);
        self.conferences.conn_gone(&mut env, conn);
        self.drain_conferences();
    }

    /// Rooms, participants, feeds (tests check the tables return to their baseline).
    #[doc(hidden)]
    pub fn conference_census(&self) -> crate::conference::Census {
        self.conferences.census()
    }

    pub(super) fn drain_conferences(&mut self) {
        let outputs: Vec<ConfOutput> = std::iter::from_fn(|| self.conferences.poll_output()).collect();
        self.conference_outputs(outputs);
    }

    /// Carries out the conference layer's outputs.
    pub(super) fn conference_outputs(&mut self, outputs: Vec<ConfOutput>) {
        let mut touched = BTreeSet::new();
        for o in outputs {
            match o {
                ConfOutput::Event { conn, event } => {
                    if !self.event_to_remote(conn, &event) {
                        self.send_event(conn, &event);
                    }
                    touched.insert(conn);
                }
                ConfOutput::SessionClosed { conn, session } => {
                    self.session_closed_remote(conn, session);
                    touched.insert(conn);
                }
                ConfOutput::Transmit { to, payload } => {
                    if let Some((socket, _)) = self.media.webrtc() {
                        // Media is not recorded in captures.
                        self.out.push_back(Output::Datagram(Transmit { socket, to, payload }));
                    }
                }
                ConfOutput::ToAccount { except, account, event } => {
                    self.invite_elsewhere(except, &account, &event);
                    let holders: Vec<ConnId> = self
                        .conns
                        .iter()
                        .filter(|(id, c)| {
                            **id != except && matches!(&c.phase, Phase::Ws(s) if s.client.account(&account).is_some())
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    for id in holders {
                        self.send_event(id, &event);
                        touched.insert(id);
                    }
                }
            }
        }
        for conn in touched {
            self.forget_idle_remote(conn);
            if matches!(self.conns.get(&conn), Some(Conn { phase: Phase::Ws(_), .. })) {
                self.flush(conn);
            }
        }
    }
}
