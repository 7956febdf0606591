//! Rooms across workers (`crate::conference::remote`): routing a connection's `videoroom-*`
//! requests to its rooms' home workers, serving remote connections' requests as their aliases,
//! and carrying events, session ends, invitations and departures between workers.

use super::{Conn, Gateway, Phase};
use crate::api::videoroom::VideoroomRequest as R;
use crate::api::{AccountEvent, Dialect, Event, Identity, Request, RequestBody};
use crate::conference::errors::ConfError;
use crate::conference::remote::{self, Origin, Routed, WorkerMsg, REMOTE_CONN_BIT};
use crate::drive::Output;
use crate::ids::ConnId;

impl Gateway {
    /// Where `conn`'s request `req` is served: `Ok(None)` here, `Ok(Some(w))` on worker `w`; an
    /// error the connection gets at once (a session or feed id it already uses on any worker,
    /// its feed limit over all workers).
    pub(super) fn room_route(&self, conn: ConnId, req: &R) -> Result<Option<usize>, ConfError> {
        let c = &self.conferences;
        let (me, workers) = (self.config.conference.worker, self.config.conference.worker_count());
        match req {
            R::Join { session, uri, .. } => {
                if c.routes.get(conn, session).is_some() {
                    return Err(ConfError::SessionInUse { session: session.clone() });
                }
                if c.holds(conn, session) {
                    return Ok(None); // answered here: in use
                }
                let home = remote::home_of(uri, workers);
                Ok((home != me).then_some(home))
            }
            R::FeedAttach { session, feed, .. } => {
                if c.routes.get(conn, feed).is_some() {
                    return Err(ConfError::FeedInUse { feed: feed.clone() });
                }
                if c.holds(conn, feed) {
                    return Ok(None); // answered here: in use
                }
                if c.feeds_of(conn) + c.routes.feeds(conn) >= self.config.conference.max_feeds_per_connection {
                    return Err(ConfError::TooManyFeeds);
                }
                Ok(c.routes.get(conn, session))
            }
            other => Ok(c.routes.get(conn, other.session())),
        }
    }

    /// Forwards `conn`'s request to home worker `worker`; a join or attach routes its new
    /// session or feed id there from now on (until the home says it is closed).
    pub(super) fn forward_room_request(
        &mut self,
        conn: ConnId,
        worker: usize,
        transaction: &str,
        req: &R,
        account: Option<Identity>,
    ) {
        match req {
            R::Join { session, .. } => self.conferences.routes.insert(conn, session.clone(), worker, Routed::Session),
            R::FeedAttach { feed, .. } => self.conferences.routes.insert(conn, feed.clone(), worker, Routed::Feed),
            _ => {}
        }
        log::debug!("{conn}: {} ({transaction}) to worker {worker}", req.kind());
        let dialect = self.client(conn).map_or(Dialect::V2, |c| c.dialect);
        let msg = WorkerMsg::Request {
            conn: conn.0,
            dialect: dialect.token().into(),
            account: account.map(Into::into),
            request: remote::encode_request(transaction, req),
        };
        self.send_to_worker(worker, msg);
    }

    /// Local WebSocket `conn` is gone: every worker holding some of its sessions is told.
    pub(super) fn rooms_conn_gone(&mut self, conn: ConnId) {
        for worker in self.conferences.routes.remove_conn(conn) {
            self.send_to_worker(worker, WorkerMsg::Gone { conn: conn.0 });
        }
    }

    /// Sends `event` to the origin of `conn` if it is a remote connection's alias; false for a
    /// local connection.
    pub(super) fn event_to_remote(&mut self, conn: ConnId, event: &Event) -> bool {
        if conn.0 & REMOTE_CONN_BIT == 0 {
            return false;
        }
        let Some(o) = self.conferences.remotes.origin(conn) else { return true }; // gone: dropped
        match o.dialect.encode(event) {
            Some(text) => self.send_to_worker(o.worker, WorkerMsg::Event { conn: o.conn, event: text }),
            None => log::debug!("{conn}: {event:?} has no {} encoding; not sent", o.dialect.token()),
        }
        true
    }

    /// A remote connection's alias holds `session` no more: its origin forgets the route.
    pub(super) fn session_closed_remote(&mut self, conn: ConnId, session: String) {
        if let Some(o) = self.conferences.remotes.origin(conn) {
            self.send_to_worker(o.worker, WorkerMsg::Closed { conn: o.conn, session });
        }
    }

    /// `conference-invite` `event` for `account` to the other workers' connections (all but
    /// `except`, the inviter).
    pub(super) fn invite_elsewhere(&mut self, except: ConnId, account: &str, event: &Event) {
        let (me, workers) = (self.config.conference.worker, self.config.conference.worker_count());
        let Event::Account { event: AccountEvent::ConferenceInvite { room, session_id, originator }, .. } = event
        else {
            return;
        };
        let inviter = self.conferences.remotes.origin(except);
        for worker in (0..workers).filter(|w| *w != me) {
            let msg = WorkerMsg::Invite {
                except: inviter.filter(|o| o.worker == worker).map(|o| o.conn),
                account: account.to_string(),
                room: room.clone(),
                session_id: session_id.clone(),
                originator: originator.clone().into(),
            };
            self.send_to_worker(worker, msg);
        }
    }

    /// Forgets `conn` if it is a remote connection's alias that holds no session any more.
    pub(super) fn forget_idle_remote(&mut self, conn: ConnId) {
        if conn.0 & REMOTE_CONN_BIT != 0 && !self.conferences.has_conn(conn) {
            self.conferences.remotes.forget(conn);
        }
    }

    /// `Input::FromWorker`: a message of worker `worker`'s gateway.
    pub(super) fn worker_message(&mut self, worker: usize, msg: WorkerMsg) {
        if worker >= self.config.conference.worker_count() || worker == self.config.conference.worker {
            log::warn!("message from worker {worker}, which is not another worker; dropped");
            return;
        }
        match msg {
            WorkerMsg::Request { conn, dialect, account, request } => {
                let (transaction, req) = match crate::api::decode(&request) {
                    Ok(Request { transaction, body: RequestBody::Videoroom(r) }) => (transaction, r),
                    other => {
                        log::warn!("worker {worker} conn:{conn}: not a room request ({other:?}); dropped");
                        return;
                    }
                };
                let origin = Origin { worker, conn, dialect: remote::dialect_of(&dialect) };
                let alias = self.conferences.remotes.alias(origin);
                let new_id = match &req {
                    R::Join { session, .. } => Some(session.clone()),
                    R::FeedAttach { feed, .. } => Some(feed.clone()),
                    _ => None,
                };
                self.local_videoroom_request(alias, transaction, req, account.map(Into::into));
                if let Some(id) = new_id.filter(|id| !self.conferences.holds(alias, id)) {
                    // Refused: the origin forgets the route it made.
                    self.send_to_worker(worker, WorkerMsg::Closed { conn, session: id });
                }
                self.forget_idle_remote(alias);
            }
            WorkerMsg::Gone { conn } => self.remote_gone(worker, conn),
            WorkerMsg::Event { conn, event } => self.send_text(ConnId(conn), event),
            WorkerMsg::Closed { conn, session } => self.conferences.routes.remove(ConnId(conn), &session, worker),
            WorkerMsg::Invite { except, account, room, session_id, originator } => {
                let holders: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(id, c)| {
                        Some(id.0) != except && matches!(&c.phase, Phase::Ws(s) if s.client.account(&account).is_some())
                    })
                    .map(|(id, _)| *id)
                    .collect();
                let event = AccountEvent::ConferenceInvite { room, session_id, originator: originator.into() };
                let event = Event::Account { account, event };
                for id in holders {
                    self.send_event(id, &event);
                    self.flush(id);
                }
            }
        }
    }

    /// `Input::ToWorkerFailed`: a request is answered with an error (its new route forgotten);
    /// events that did not reach their connection make it leave its rooms here.
    pub(super) fn worker_undelivered(&mut self, worker: usize, msg: WorkerMsg) {
        log::warn!("worker {worker} did not take {}", msg.encode());
        match msg {
            WorkerMsg::Request { conn, request, .. } => {
                let conn = ConnId(conn);
                let Ok(Request { transaction, body: RequestBody::Videoroom(req) }) = crate::api::decode(&request)
                else {
                    return;
                };
                match &req {
                    R::Join { session, .. } => self.conferences.routes.remove(conn, session, worker),
                    R::FeedAttach { feed, .. } => self.conferences.routes.remove(conn, feed, worker),
                    _ => {}
                }
                self.send_event(conn, &Event::Error { transaction, error: ConfError::HomeUnavailable.to_string() });
                self.flush(conn);
            }
            WorkerMsg::Event { conn, .. } => self.remote_gone(worker, conn),
            WorkerMsg::Gone { .. } | WorkerMsg::Closed { .. } | WorkerMsg::Invite { .. } => {}
        }
    }

    /// Remote connection `conn` of `worker` is gone (or lost): it leaves its rooms here.
    fn remote_gone(&mut self, worker: usize, conn: u64) {
        let Some(alias) = self.conferences.remotes.find(worker, conn) else { return };
        // Forgotten first: nothing more is sent to it.
        self.conferences.remotes.forget(alias);
        self.conference_conn_gone(alias);
    }

    /// Hands `msg` to the runtime for worker `worker` (recorded in captures).
    fn send_to_worker(&mut self, worker: usize, msg: WorkerMsg) {
        let out = Output::ToWorker { worker, msg };
        if let Some(rec) = &mut self.recorder {
            rec.output(self.now, &out);
        }
        self.out.push_back(out);
    }

    /// Sends an already encoded message on WebSocket `conn` (gone: dropped).
    fn send_text(&mut self, conn: ConnId, text: String) {
        let Some(Conn { phase: Phase::Ws(session), close, .. }) = self.conns.get_mut(&conn) else { return };
        if session.ws.send_text(text).is_err() {
            *close = true;
        }
        self.flush(conn);
    }
}

#[cfg(test)]
mod tests {
    use crate::conference::remote::WorkerMsg;
    use crate::{Config, Gateway, Input, Output};
    use std::time::Duration;

    #[test]
    fn bad_messages_from_workers_are_dropped() {
        let t0 = crate::time::test_epoch();
        let mut config = Config::default();
        config.conference.worker = 0;
        config.conference.workers = 2;
        let mut gw = Gateway::new(config, [3; 32], t0, Duration::from_secs(1_767_225_600)).unwrap();
        while !matches!(gw.poll_output(), Output::Timeout(_)) {}
        let request = |text: &str| WorkerMsg::Request {
            conn: 4,
            dialect: "nonsense".into(),
            account: None,
            request: text.into(),
        };
        let inputs = [
            Input::FromWorker { worker: 1, msg: request("not json") },
            Input::FromWorker { worker: 1, msg: request(r#"{"sylkrtc":"ping","transaction":"1"}"#) },
            Input::FromWorker { worker: 0, msg: WorkerMsg::Gone { conn: 4 } },
            Input::FromWorker { worker: 7, msg: WorkerMsg::Gone { conn: 4 } },
            Input::FromWorker { worker: 1, msg: WorkerMsg::Event { conn: 99, event: "{}".into() } },
            Input::FromWorker { worker: 1, msg: WorkerMsg::Closed { conn: 99, session: "s".into() } },
            Input::FromWorker { worker: 1, msg: WorkerMsg::Gone { conn: 99 } },
            Input::ToWorkerFailed { worker: 1, msg: request("not json") },
            Input::ToWorkerFailed { worker: 1, msg: WorkerMsg::Event { conn: 99, event: "{}".into() } },
        ];
        for input in inputs {
            let shown = format!("{input:?}");
            gw.handle_input(t0, input);
            assert!(matches!(gw.poll_output(), Output::Timeout(_)), "{shown} caused an output");
        }
        assert_eq!(gw.conference_census(), crate::conference::Census::default());
    }
}
