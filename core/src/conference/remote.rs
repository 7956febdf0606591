//! Rooms across workers (`sylkgw` runs one gateway per worker): every room has a **home**
//! worker, [`home_of`] its URI; only signalling crosses workers, as [`WorkerMsg`]s.
//!
//! # Contracts
//! - The **origin** (the worker holding the WebSocket) checks what is the connection's (its
//!   accounts, its feed limit, session ids unique over all its rooms), then forwards the request,
//!   re-encoded in sylkRTC-2 ([`encode_request`]), as [`WorkerMsg::Request`]. It remembers which
//!   worker holds each of the connection's room sessions and feeds ([`Routes`]) to route the
//!   requests that name them.
//! - The **home** serves a remote connection as an alias [`ConnId`] with [`REMOTE_CONN_BIT`] set
//!   ([`Remotes`]), so the conference tables do not know the difference; the alias's legs are the
//!   home's, so their SDP carries the home's WebRTC port and media never crosses threads. Events
//!   for an alias go back encoded in the origin connection's dialect ([`WorkerMsg::Event`]);
//!   each of its sessions that ends, or a join/attach that failed, is told ([`WorkerMsg::Closed`])
//!   so the origin's routes shrink with the home's tables. An alias holding no session is
//!   forgotten.
//! - The origin tells every home of a connection that went away ([`WorkerMsg::Gone`]).
//!   `conference-invite` goes to the invitees' connections on every worker ([`WorkerMsg::Invite`]).
//! - A message the runtime could not deliver comes back (`Input::ToWorkerFailed`): a request is
//!   answered with an error, an event means the origin connection is lost (it leaves its rooms).
//! - With one worker nothing here is used.

use crate::api::videoroom::VideoroomRequest as R;
use crate::api::Dialect;
use crate::ids::ConnId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Set in the alias ids of remote connections (accepted ids count up from 1; the SIP stack's own
/// have bit 63).
pub const REMOTE_CONN_BIT: u64 = 1 << 62;

/// A message between the gateways of two workers (one JSON line in captures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WorkerMsg {
    /// Origin → home: a `videoroom-*` request of WebSocket `conn` (`request` in sylkRTC-2).
    Request {
        /// The origin's connection id.
        conn: u64,
        /// The connection's dialect (`Sec-WebSocket-Protocol` token): events are encoded in it.
        dialect: String,
        /// The joining account as the connection added it (`videoroom-join` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<RemoteIdentity>,
        /// The request message.
        request: String,
    },
    /// Origin → home: WebSocket `conn` is gone; its rooms are left.
    Gone {
        /// The origin's connection id.
        conn: u64,
    },
    /// Home → origin: send `event` (encoded) on WebSocket `conn`.
    Event {
        /// The origin's connection id.
        conn: u64,
        /// The message text.
        event: String,
    },
    /// Home → origin: `conn` holds `session` (publisher session or feed id) no more.
    Closed {
        /// The origin's connection id.
        conn: u64,
        /// The session or feed id.
        session: String,
    },
    /// Home → every other worker: `conference-invite` for `account` to its connections (but
    /// `except`, the inviter's, on its origin worker).
    Invite {
        /// The inviting connection, on the worker this message goes to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<u64>,
        /// The invited account.
        account: String,
        /// The room.
        room: String,
        /// The invitation's id.
        session_id: String,
        /// Who invites.
        originator: RemoteIdentity,
    },
}

/// An [`Identity`](crate::api::Identity) on the wire between workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteIdentity {
    /// Bare AOR.
    pub uri: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

impl From<crate::api::Identity> for RemoteIdentity {
    fn from(i: crate::api::Identity) -> Self {
        Self { uri: i.uri, display_name: i.display_name }
    }
}

impl From<RemoteIdentity> for crate::api::Identity {
    fn from(i: RemoteIdentity) -> Self {
        Self { uri: i.uri, display_name: i.display_name }
    }
}

impl WorkerMsg {
    /// One JSON line (captures).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Inverse of [`WorkerMsg::encode`].
    pub fn decode(line: &str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }
}

/// The home worker of room `uri` among `workers`: FNV-1a of the URI, so every worker (and every
/// run) agrees.
pub fn home_of(uri: &str, workers: usize) -> usize {
    let hash = uri.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    usize::try_from(hash % workers.max(1) as u64).unwrap_or(0)
}

/// `req` as the sylkRTC-2 message a client would have sent (`api::decode` reads it back to the
/// same request).
pub fn encode_request(transaction: &str, req: &R) -> String {
    let mut m = Map::new();
    m.insert("sylkrtc".into(), req.kind().into());
    m.insert("transaction".into(), transaction.into());
    m.insert("session".into(), req.session().into());
    let extra = match req {
        R::Join { account, uri, sdp, audio, video, .. } => {
            json!({ "account": account, "uri": uri, "sdp": sdp, "audio": audio, "video": video })
        }
        R::Leave { .. } | R::MuteAudio { .. } => json!({}),
        R::Configure { active_participants, .. } => json!({ "active_participants": active_participants }),
        R::FeedAttach { publisher, feed, .. } => json!({ "publisher": publisher, "feed": feed }),
        R::FeedAnswer { feed, sdp, .. } => json!({ "feed": feed, "sdp": sdp }),
        R::FeedDetach { feed, .. } => json!({ "feed": feed }),
        R::Invite { participants, .. } => json!({ "participants": participants }),
        R::Trickle { candidates, .. } => {
            let c: Vec<Value> = candidates
                .iter()
                .map(|c| json!({ "candidate": c.candidate, "sdpMLineIndex": c.sdp_mline_index, "sdpMid": c.sdp_mid }))
                .collect();
            json!({ "candidates": c })
        }
        R::SessionUpdate { audio, video, bitrate, .. } => {
            let mut o = Map::new();
            for (k, v) in [("audio", audio.map(Value::from)), ("video", video.map(Value::from))] {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            if let Some(b) = bitrate {
                o.insert("bitrate".into(), (*b).into());
            }
            json!({ "options": o })
        }
        R::Message { message_id, content, content_type, .. } => {
            json!({ "message_id": message_id, "content": content, "content_type": content_type })
        }
        R::Composing { state, refresh, .. } => match refresh {
            Some(r) => json!({ "state": state, "refresh": r }),
            None => json!({ "state": state }),
        },
        R::ToggleHand { session_id, .. } => match session_id {
            Some(s) => json!({ "session_id": s }),
            None => json!({}),
        },
    };
    if let Value::Object(extra) = extra {
        m.extend(extra);
    }
    Value::Object(m).to_string()
}

/// The dialect named by a [`WorkerMsg::Request`] (sylkRTC-2 when unknown).
pub fn dialect_of(token: &str) -> Dialect {
    Dialect::negotiate([token]).unwrap_or(Dialect::V2)
}

/// Where a remote connection lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Its worker.
    pub worker: usize,
    /// Its id there.
    pub conn: u64,
    /// Its dialect.
    pub dialect: Dialect,
}

/// Home side: the alias ids of remote connections that hold (or are asking for) room sessions
/// here.
#[derive(Debug, Default)]
pub struct Remotes {
    by_origin: BTreeMap<(usize, u64), ConnId>,
    by_alias: BTreeMap<ConnId, Origin>,
    next: u64,
}

impl Remotes {
    /// The alias of `origin`'s connection, made on first use.
    pub fn alias(&mut self, origin: Origin) -> ConnId {
        if let Some(a) = self.by_origin.get(&(origin.worker, origin.conn)) {
            return *a;
        }
        self.next += 1;
        let alias = ConnId(REMOTE_CONN_BIT | self.next);
        self.by_origin.insert((origin.worker, origin.conn), alias);
        self.by_alias.insert(alias, origin);
        alias
    }

    /// The alias of `conn` of `worker`, if it has one.
    pub fn find(&self, worker: usize, conn: u64) -> Option<ConnId> {
        self.by_origin.get(&(worker, conn)).copied()
    }

    /// Where alias `alias` lives; `None` for a local connection.
    pub fn origin(&self, alias: ConnId) -> Option<Origin> {
        self.by_alias.get(&alias).copied()
    }

    /// Forgets `alias`.
    pub fn forget(&mut self, alias: ConnId) {
        if let Some(o) = self.by_alias.remove(&alias) {
            self.by_origin.remove(&(o.worker, o.conn));
        }
    }

    /// Aliases held.
    pub fn len(&self) -> usize {
        self.by_alias.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_alias.is_empty()
    }
}

/// Whether a routed session id is a publisher session or a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// A publisher session (`videoroom-join`).
    Session,
    /// A feed (`videoroom-feed-attach`).
    Feed,
}

/// Origin side: the room sessions and feeds of local connections that live on other workers.
#[derive(Debug, Default)]
pub struct Routes {
    map: BTreeMap<(ConnId, String), (usize, Routed)>,
}

impl Routes {
    /// The worker holding `conn`'s session or feed `id`.
    pub fn get(&self, conn: ConnId, id: &str) -> Option<usize> {
        self.map.get(&(conn, id.to_string())).map(|(w, _)| *w)
    }

    /// Records that `conn`'s `id` lives on `worker` (from the forwarding of its join or attach).
    pub fn insert(&mut self, conn: ConnId, id: String, worker: usize, kind: Routed) {
        self.map.insert((conn, id), (worker, kind));
    }

    /// Forgets `conn`'s `id` if `worker` holds it.
    pub fn remove(&mut self, conn: ConnId, id: &str, worker: usize) {
        let key = (conn, id.to_string());
        if self.map.get(&key).is_some_and(|(w, _)| *w == worker) {
            self.map.remove(&key);
        }
    }

    /// Feeds of `conn` on other workers.
    pub fn feeds(&self, conn: ConnId) -> usize {
        self.of(conn).filter(|(_, (_, k))| *k == Routed::Feed).count()
    }

    /// Forgets everything of `conn`; returns the workers that held some of it.
    pub fn remove_conn(&mut self, conn: ConnId) -> BTreeSet<usize> {
        let keys: Vec<(ConnId, String)> = self.of(conn).map(|(k, _)| k.clone()).collect();
        keys.iter().filter_map(|k| self.map.remove(k)).map(|(w, _)| w).collect()
    }

    /// Entries held (tests check the baseline).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn of(&self, conn: ConnId) -> impl Iterator<Item = (&(ConnId, String), &(usize, Routed))> {
        self.map.range((conn, String::new())..).take_while(move |((c, _), _)| *c == conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{IceCandidate, RequestBody};

    #[test]
    fn requests_round_trip_through_their_encoding() {
        let s = || "s1".to_string();
        let requests = [
            R::Join {
                session: s(),
                account: "a@b.c".into(),
                uri: "room@d.e".into(),
                sdp: "v=0\r\n".into(),
                audio: true,
                video: false,
            },
            R::Leave { session: s() },
            R::Configure { session: s(), active_participants: vec!["x".into(), "y".into()] },
            R::FeedAttach { session: s(), publisher: "p".into(), feed: "f".into() },
            R::FeedAnswer { session: s(), feed: "f".into(), sdp: "v=0\r\n".into() },
            R::FeedDetach { session: s(), feed: "f".into() },
            R::Invite { session: s(), participants: vec!["z@b.c".into()] },
            R::Trickle {
                session: s(),
                candidates: vec![IceCandidate {
                    candidate: "candidate:1 1 udp 1 10.0.0.1 5000 typ host".into(),
                    sdp_mline_index: 0,
                    sdp_mid: "0".into(),
                }],
            },
            R::Trickle { session: s(), candidates: Vec::new() },
            R::SessionUpdate { session: s(), audio: Some(false), video: None, bitrate: Some(300_000) },
            R::SessionUpdate { session: s(), audio: None, video: None, bitrate: None },
            R::Message {
                session: s(),
                message_id: "m".into(),
                content: "hi".into(),
                content_type: "text/plain".into(),
            },
            R::Composing { session: s(), state: "active".into(), refresh: Some(60) },
            R::Composing { session: s(), state: "idle".into(), refresh: None },
            R::MuteAudio { session: s() },
            R::ToggleHand { session: s(), session_id: Some("o".into()) },
            R::ToggleHand { session: s(), session_id: None },
        ];
        for req in requests {
            let text = encode_request("t9", &req);
            let back = crate::api::decode(&text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(back.transaction, "t9");
            assert_eq!(back.body, RequestBody::Videoroom(req), "{text}");
        }
    }

    #[test]
    fn messages_round_trip_as_one_line() {
        let msgs = [
            WorkerMsg::Request {
                conn: 3,
                dialect: "sylkRTC-2".into(),
                account: Some(RemoteIdentity { uri: "a@b.c".into(), display_name: None }),
                request: "{\"sylkrtc\":\"videoroom-leave\"}".into(),
            },
            WorkerMsg::Gone { conn: 3 },
            WorkerMsg::Event { conn: 3, event: "{\"a\":\"b\\r\\nc\"}".into() },
            WorkerMsg::Closed { conn: 3, session: "s".into() },
            WorkerMsg::Invite {
                except: None,
                account: "x@y.z".into(),
                room: "r@y.z".into(),
                session_id: "id".into(),
                originator: RemoteIdentity { uri: "a@b.c".into(), display_name: Some("A".into()) },
            },
        ];
        for m in msgs {
            let line = m.encode();
            assert!(!line.contains('\n'));
            assert_eq!(WorkerMsg::decode(&line), Ok(m));
        }
        assert!(WorkerMsg::decode("{\"kind\":\"nope\"}").is_err());
    }

    #[test]
    fn homes_are_stable_and_spread() {
        assert_eq!(home_of("room@x.y", 1), 0);
        assert_eq!(home_of("room@x.y", 4), home_of("room@x.y", 4));
        let homes: BTreeSet<usize> = (0..32).map(|i| home_of(&format!("room{i}@x.y"), 2)).collect();
        assert_eq!(homes, BTreeSet::from([0, 1]));
    }

    #[test]
    fn routes_and_aliases_are_forgotten() {
        let mut r = Routes::default();
        r.insert(ConnId(1), "s".into(), 1, Routed::Session);
        r.insert(ConnId(1), "f".into(), 1, Routed::Feed);
        r.insert(ConnId(2), "s".into(), 0, Routed::Session);
        assert_eq!((r.get(ConnId(1), "f"), r.feeds(ConnId(1))), (Some(1), 1));
        r.remove(ConnId(1), "f", 0);
        assert_eq!(r.get(ConnId(1), "f"), Some(1), "only the worker holding it forgets it");
        assert_eq!(r.remove_conn(ConnId(1)), BTreeSet::from([1]));
        assert_eq!(r.len(), 1);
        let mut a = Remotes::default();
        let o = Origin { worker: 1, conn: 7, dialect: Dialect::V2 };
        let x = a.alias(o);
        assert_eq!(a.alias(o), x);
        assert!(x.0 & REMOTE_CONN_BIT != 0);
        assert_eq!(a.origin(x), Some(o));
        a.forget(x);
        assert!(a.is_empty() && a.find(1, 7).is_none());
    }
}
