//! The messaging machine (issue #12): sylkRTC messaging requests ↔ SIP MESSAGE (RFC 3428) and
//! the journal in storage, as SylkServer's webrtcgateway does it (`handler.py` `_RH_account_*`,
//! `sip_handlers.MessageHandler`).
//!
//! Contracts:
//! - Every messaging request gets exactly one `ack` or `error`. A request that journals is
//!   acknowledged only once the store answered, so nothing acknowledged is lost; a storage
//!   failure is the `error` `storage unavailable: …` and nothing is sent.
//! - An incoming MESSAGE that is stored is answered only once the store answered: 200 when a
//!   connection of the account got it, 202 when it is only stored (RFC 3428 §7: accepted for
//!   later delivery), 404 for an account never seen, 500 when storage failed and no connection
//!   got it (the sender may retry).
//! - `sync` events go to the account's *other* connections on this gateway at once; the same
//!   entries go to its other devices as a MESSAGE to the account itself (SylkServer
//!   `_send_simple_sip_message`), marked with [`SYNC_ORIGIN_HEADER`] so that our own copy,
//!   forked back to us by the proxy, is dropped.
//!
//! Sub-machines are referred to by id: storage outcomes by [`StoreId`] ([`Waiter`]), SIP results
//! by [`MsgId`] ([`Sent`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::Gateway;
use crate::api::messaging::{
    AccountMessaging, DispositionFields, JournalItem, MessageFields, MessagingEvent, MessagingRequest, OutgoingMessage,
    Sender,
};
use crate::api::Event;
use crate::errors::{AccountOp, CallError, ClientError, SessionOp};
use crate::ids::ConnId;
use crate::messaging::body::{ChatMessage, SyncEntry};
use crate::messaging::outgoing::{self, OutgoingBody, OutgoingError, RECEIPTS};
use crate::messaging::{classify, Identity, Incoming};
use crate::sip::stack::{InboundMsgId, IncomingMessage, MessageParams, MsgId, RegId, SipIdentity};
use crate::storage::{
    iso, AddOutcome, Direction, JournalEntry, JournalStamp, MessageState, NewMessage, RemoveSide, StoreError, StoreId,
    StoreRequest, StoreResult, UnixMicros,
};

/// The SIP header that marks the sync MESSAGEs this gateway sends to an account itself; its
/// value is this gateway's [`Messaging::origin`].
pub const SYNC_ORIGIN_HEADER: &str = "X-Sylkgw-Sync";
/// `account-sync-conversations` without `limit` (SylkServer's default).
pub const DEFAULT_SYNC_LIMIT: u32 = 5000;
/// The window of `Config::max_messages_per_second`.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Accounts in the rate table before the idle ones are dropped.
const MAX_RATE_ENTRIES: usize = 1024;

/// Why a messaging request failed. `Display` is the `error` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessagingError {
    /// The connection has not added the account.
    UnknownAccount { account: String },
    /// The account has not registered on this connection (SylkServer's `auth_state`).
    NotAuthenticated,
    /// `content` over `Config::max_message_size` bytes.
    TooLarge { max: usize },
    /// More than `Config::max_messages_per_second` for the account.
    TooMany,
    /// The content cannot be put in a MESSAGE.
    Invalid(OutgoingError),
    /// `since` is not an ISO 8601 timestamp.
    BadSince,
    /// The store failed.
    Storage(StoreError),
}

impl std::fmt::Display for MessagingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownAccount { account } => {
                ClientError::UnknownAccount { account: account.clone(), op: AccountOp::Any }.fmt(f)
            }
            Self::NotAuthenticated => f.write_str("Account not authenticated"),
            Self::TooLarge { max } => write!(f, "Message too large: at most {max} bytes"),
            Self::TooMany => f.write_str("Too many messages"),
            Self::Invalid(e) => write!(f, "Invalid message: {e}"),
            Self::BadSince => f.write_str("Invalid since: not an ISO 8601 timestamp"),
            Self::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for MessagingError {}

/// What a storage outcome is for.
#[derive(Debug)]
enum Waiter {
    /// Only logged (state updates, trims, account touches).
    Log,
    /// `account-message` journaled: send it, then answer.
    Outgoing { conn: ConnId, transaction: String, message: OutgoingMessage, body: OutgoingBody },
    /// `account-sync-conversations`.
    Journal { conn: ConnId, transaction: String, account: String },
    /// `lookup-public-key`.
    PublicKey { conn: ConnId, transaction: String, uri: String },
    /// A marker (read, removed message, removed conversation) journaled: answer, fork the
    /// `sync`, tell the other devices; `receiver` is the peer's copy to remove next.
    Marker { conn: ConnId, transaction: String, account: String, sync: SyncEvent, receiver: Option<StoreRequest> },
    /// The peer's copy of a removed message (SylkServer's `receiver_remove_message`).
    ReceiverRemove { account: String, sync: SyncEvent },
    /// An incoming chat MESSAGE stored: deliver it and answer.
    Inbound { id: InboundMsgId, account: String, message: MessageFields },
    /// An incoming IMDN's state stored: deliver it and answer.
    InboundImdn { id: InboundMsgId, account: String, disposition: DispositionFields },
    /// A MESSAGE the next hop could not deliver, stored for its recipient (an account of this
    /// gateway's storage, offline): `accepted` (202) if stored, else `failed`.
    Offline { account: String, message_id: String, timestamp: String, code: u16, reason: String },
}

/// A `sync` event: `type`, `action`, `content`.
#[derive(Debug, Clone)]
struct SyncEvent {
    kind: &'static str,
    action: &'static str,
    content: Value,
}

/// What an outgoing MESSAGE was.
#[derive(Debug)]
enum Sent {
    /// An `account-message`: its result is a `disposition-notification`.
    Chat { account: String, target: String, message_id: String, timestamp: String, stored: NewMessage },
    /// A `session-message`: its result is a session `disposition-notification`.
    Session { conn: ConnId, session: String, message_id: String, timestamp: String },
    /// An IMDN or a sync entry: the result is only logged.
    Quiet,
}

/// The messaging machine's state.
#[derive(Debug, Default)]
pub(super) struct Messaging {
    /// Registrations that reached `registered`: their account is authenticated on its
    /// connection while the registration is the account's.
    registered: BTreeSet<RegId>,
    /// Storage requests in flight.
    waiting: BTreeMap<StoreId, Waiter>,
    /// MESSAGEs in flight.
    sent: BTreeMap<MsgId, Sent>,
    /// When each account's last messages were sent (`Config::max_messages_per_second`).
    recent: BTreeMap<String, VecDeque<Instant>>,
    /// This gateway's [`SYNC_ORIGIN_HEADER`] value, drawn at first use.
    origin: Option<String>,
}

fn sync_of(entry: &SyncEntry) -> SyncEvent {
    match entry {
        SyncEntry::ConversationRead { contact } => {
            SyncEvent { kind: "conversation", action: "read", content: json!({ "contact": contact }) }
        }
        SyncEntry::MessageRemove { contact, message_id, direction } => SyncEvent {
            kind: "message",
            action: "remove",
            content: json!({ "contact": contact, "message_id": message_id, "direction": direction }),
        },
        SyncEntry::ConversationRemove { contact, timestamp } => SyncEvent {
            kind: "conversation",
            action: "remove",
            content: json!({ "contact": contact, "timestamp": timestamp }),
        },
    }
}

fn journal_item(e: JournalEntry) -> JournalItem {
    JournalItem {
        contact: e.contact,
        timestamp: e.timestamp,
        disposition: e.disposition,
        message_id: e.message_id,
        content_type: e.content_type,
        content: e.content,
        direction: e.direction.map_or("", Direction::as_str).to_string(),
        state: e.state.map(|s| s.as_str().to_string()),
    }
}

impl Gateway {
    // ===== Helpers =====

    fn wall(&self) -> UnixMicros {
        UnixMicros(i64::try_from(self.unix_now().as_micros()).unwrap_or(i64::MAX))
    }

    /// A fresh id in UUID form (journal markers, IMDNs, messages without `imdn.Message-ID`).
    /// The journal entry of an outgoing `account-message`: `pending`, asking for every receipt.
    fn outgoing_entry(&self, message: &OutgoingMessage) -> NewMessage {
        NewMessage {
            account: message.account.clone(),
            contact: message.uri.clone(),
            direction: Some(Direction::Outgoing),
            content_type: message.content_type.clone(),
            content: message.content.clone(),
            message_id: message.message_id.clone(),
            timestamp: message.timestamp.clone(),
            disposition: RECEIPTS.iter().map(|r| r.to_string()).collect(),
            state: Some(MessageState::Pending),
            created_at: self.wall(),
        }
    }

    fn fresh_id(&mut self) -> String {
        let h = self.rng.hex(32);
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }

    fn stamp(&mut self) -> JournalStamp {
        let created_at = self.wall();
        JournalStamp { message_id: self.fresh_id(), created_at, timestamp: iso::format(created_at) }
    }

    fn ask(&mut self, request: StoreRequest, waiter: Waiter) {
        let id = self.store(request);
        self.messaging.waiting.insert(id, waiter);
    }

    /// Whether `account` is authenticated on `conn` (registered there, SylkServer `auth_state`).
    fn authenticated(&self, conn: ConnId, account: &str) -> bool {
        let reg = self.client(conn).and_then(|c| c.account(account)).and_then(|a| a.registration);
        reg.is_some_and(|r| self.messaging.registered.contains(&r))
    }

    /// The connections that have added `account` (all, or only those where it is
    /// authenticated).
    fn conns_with(&self, account: &str, authenticated_only: bool) -> Vec<ConnId> {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.into_iter()
            .filter(|&id| self.client(id).is_some_and(|c| c.account(account).is_some()))
            .filter(|&id| !authenticated_only || self.authenticated(id, account))
            .collect()
    }

    fn emit_event(&mut self, conn: ConnId, event: Event) {
        self.send_event(conn, &event);
        self.flush(conn);
    }

    fn emit_all(&mut self, conns: &[ConnId], event: &Event) {
        for &conn in conns {
            self.send_event(conn, event);
            self.flush(conn);
        }
    }

    fn account_event(account: &str, event: AccountMessaging) -> Event {
        Event::Messaging(MessagingEvent::Account { account: account.to_string(), event })
    }

    fn send_sip(
        &mut self,
        identity: SipIdentity,
        target: &str,
        body: OutgoingBody,
        extra: Vec<(String, String)>,
    ) -> MsgId {
        let params = MessageParams {
            identity,
            target: target.to_string(),
            content_type: body.content_type.to_string(),
            body: body.body,
            headers: extra,
        };
        self.sip.send_message(params, self.now, &mut self.rng)
    }

    /// Tells the account's other devices about `entry`: a MESSAGE to the account itself.
    fn sync_devices(&mut self, conn: ConnId, account: &str, entry: &SyncEntry) {
        let Some(identity) = self.identity(conn, account) else { return };
        let origin = match &self.messaging.origin {
            Some(o) => o.clone(),
            None => {
                let o = self.rng.hex(16);
                self.messaging.origin = Some(o.clone());
                o
            }
        };
        let id =
            self.send_sip(identity, account, outgoing::sync_entry(entry), vec![(SYNC_ORIGIN_HEADER.into(), origin)]);
        self.messaging.sent.insert(id, Sent::Quiet);
    }

    /// Counts a message of `account` at now; false when over `Config::max_messages_per_second`.
    fn within_message_rate(&mut self, account: &str) -> bool {
        let max = self.config.max_messages_per_second.max(1);
        let now = self.now;
        // Accounts that sent nothing within the window are forgotten, so the table stays as
        // small as the set of accounts sending right now.
        if self.messaging.recent.len() >= MAX_RATE_ENTRIES {
            self.messaging
                .recent
                .retain(|_, q| q.back().is_some_and(|&t| now.saturating_duration_since(t) < RATE_WINDOW));
        }
        let recent = self.messaging.recent.entry(account.to_string()).or_default();
        while recent.front().is_some_and(|&t| now.saturating_duration_since(t) >= RATE_WINDOW) {
            recent.pop_front();
        }
        if recent.len() >= max {
            return false;
        }
        recent.push_back(now);
        true
    }

    /// Keeps the account's journal within `Config::max_journal_entries` (oldest dropped).
    fn trim_journal(&mut self, account: &str) {
        if self.config.max_journal_entries > 0 {
            let keep = self.config.max_journal_entries;
            self.ask(StoreRequest::TrimJournal { account: account.to_string(), keep }, Waiter::Log);
        }
    }

    // ===== Registration =====

    /// Registration `reg` of `account` reached `registered` (true) or failed (false): its
    /// account is authenticated for messaging while it lasts; a first success records the
    /// login (`TouchAccount`, so messages are stored for it while offline).
    pub(super) fn messaging_registration(&mut self, reg: RegId, registered: bool) {
        if !registered {
            self.messaging.registered.remove(&reg);
            return;
        }
        let Some((_, account)) = self.regs.get(&reg).cloned() else { return };
        if self.messaging.registered.insert(reg) {
            let now = self.wall();
            self.ask(StoreRequest::TouchAccount { account, now }, Waiter::Log);
        }
    }

    // ===== Requests =====

    /// A messaging request of connection `conn`: answered with one `ack` or `error`, now or
    /// once the store answered.
    pub(super) fn messaging_request(&mut self, conn: ConnId, transaction: String, request: MessagingRequest) {
        log::debug!("{conn}: request {} ({transaction})", request.kind());
        if let Err(error) = self.start_request(conn, &transaction, request) {
            log::info!("{conn}: messaging request failed ({transaction}): {error}");
            self.emit_event(conn, Event::Error { transaction, error: error.to_string() });
        }
    }

    fn start_request(
        &mut self,
        conn: ConnId,
        transaction: &str,
        request: MessagingRequest,
    ) -> Result<(), MessagingError> {
        if let Some(account) = request.account() {
            if self.client(conn).and_then(|c| c.account(account)).is_none() {
                return Err(MessagingError::UnknownAccount { account: account.to_string() });
            }
            if !self.authenticated(conn, account) {
                return Err(MessagingError::NotAuthenticated);
            }
        }
        let transaction = transaction.to_string();
        match request {
            MessagingRequest::LookupPublicKey { uri } => {
                self.ask(
                    StoreRequest::LookupPublicKey { account: uri.clone() },
                    Waiter::PublicKey { conn, transaction, uri },
                );
            }
            MessagingRequest::Message(message) => {
                if message.content.len() > self.config.max_message_size {
                    return Err(MessagingError::TooLarge { max: self.config.max_message_size });
                }
                if !self.within_message_rate(&message.account) {
                    return Err(MessagingError::TooMany);
                }
                let display =
                    self.client(conn).and_then(|c| c.account(&message.account)).and_then(|a| a.display_name.clone());
                let body = outgoing::chat_message(
                    &Identity::from_aor(&message.account, display.as_deref()),
                    &Identity::from_aor(&message.uri, None),
                    &message.message_id,
                    &message.timestamp,
                    &message.content,
                    &message.content_type,
                    true,
                )
                .map_err(MessagingError::Invalid)?;
                let stored = self.outgoing_entry(&message);
                self.ask(
                    StoreRequest::AddMessage { message: stored, require_account: false },
                    Waiter::Outgoing { conn, transaction, message, body },
                );
            }
            MessagingRequest::Disposition { account, uri, message_id, state, timestamp } => {
                // Every state the model allows goes out (SylkServer fails on failed/forbidden).
                let parsed = crate::messaging::imdn::DispositionState::parse(&state)
                    .ok_or(MessagingError::Invalid(OutgoingError::ContentType))?;
                let imdn =
                    crate::messaging::Imdn::for_state(&message_id, &timestamp, Some(&format!("sip:{uri}")), parsed);
                let notification_id = self.fresh_id();
                let now = iso::format(self.wall());
                let display = self.client(conn).and_then(|c| c.account(&account)).and_then(|a| a.display_name.clone());
                let body = outgoing::disposition(
                    &Identity::from_aor(&account, display.as_deref()),
                    &Identity::from_aor(&uri, None),
                    &notification_id,
                    &now,
                    &imdn,
                )
                .map_err(MessagingError::Invalid)?;
                if let Some(identity) = self.identity(conn, &account) {
                    let id = self.send_sip(identity, &uri, body, Vec::new());
                    self.messaging.sent.insert(id, Sent::Quiet);
                }
                if let Some(state) = MessageState::parse(&state) {
                    self.ask(StoreRequest::UpdateState { account, message_id, state }, Waiter::Log);
                }
                self.emit_event(conn, Event::Ack { transaction });
            }
            MessagingRequest::SyncConversations { account, message_id, since, limit } => {
                let since = match since.as_deref().filter(|s| !s.is_empty()) {
                    Some(text) => Some(iso::parse(text).ok_or(MessagingError::BadSince)?),
                    None => None,
                };
                let limit = limit.map_or(DEFAULT_SYNC_LIMIT, |l| u32::try_from(l.max(0)).unwrap_or(u32::MAX));
                let message_id = message_id.filter(|m| !m.is_empty());
                self.ask(
                    StoreRequest::Journal { account: account.clone(), message_id, since, limit: Some(limit) },
                    Waiter::Journal { conn, transaction, account },
                );
            }
            MessagingRequest::MarkConversationRead { account, contact } => {
                let stamp = self.stamp();
                let sync = sync_of(&SyncEntry::ConversationRead { contact: contact.clone() });
                self.ask(
                    StoreRequest::MarkConversationRead { account: account.clone(), contact, stamp },
                    Waiter::Marker { conn, transaction, account, sync, receiver: None },
                );
            }
            MessagingRequest::RemoveMessage { account, message_id, contact } => {
                let stamp = self.stamp();
                let receiver_stamp = self.stamp();
                let sync = sync_of(&SyncEntry::MessageRemove {
                    contact: contact.clone(),
                    message_id: message_id.clone(),
                    direction: "outgoing".into(),
                });
                let receiver = StoreRequest::RemoveMessage {
                    account: contact.clone(),
                    contact: account.clone(),
                    message_id: message_id.clone(),
                    side: RemoveSide::Receiver,
                    stamp: receiver_stamp,
                };
                self.ask(
                    StoreRequest::RemoveMessage {
                        account: account.clone(),
                        contact,
                        message_id,
                        side: RemoveSide::Sender,
                        stamp,
                    },
                    Waiter::Marker { conn, transaction, account, sync, receiver: Some(receiver) },
                );
            }
            MessagingRequest::RemoveConversation { account, contact } => {
                let stamp = self.stamp();
                let sync = sync_of(&SyncEntry::ConversationRemove {
                    contact: contact.clone(),
                    timestamp: Some(stamp.timestamp.clone()),
                });
                self.ask(
                    StoreRequest::RemoveConversation { account: account.clone(), contact, stamp },
                    Waiter::Marker { conn, transaction, account, sync, receiver: None },
                );
            }
        }
        Ok(())
    }

    /// `session-message` in call `call`: a MESSAGE in its dialog (RFC 3428 §4), only once the
    /// session is established and without receipts requested, as SylkServer sends it
    /// (`_RH_session_message`, `_send_in_dialog_sip_message`).
    pub(super) fn session_message(
        &mut self,
        call: crate::call::CallId,
        message_id: String,
        content: &str,
        content_type: &str,
        timestamp: String,
    ) -> Result<(), CallError> {
        let call = self.calls.calls.get(&call).ok_or(CallError::Internal)?;
        let (conn, session, account, state, leg) =
            (call.conn, call.session.clone(), call.account.clone(), call.state, call.leg);
        let op = SessionOp::Message;
        if state != crate::call::State::Established {
            return Err(CallError::InvalidState { session, op, state: state.name() });
        }
        let leg = leg.ok_or_else(|| CallError::NoDialog { session: session.clone(), op })?;
        if content.len() > self.config.max_message_size {
            let why = MessagingError::TooLarge { max: self.config.max_message_size }.to_string();
            return Err(CallError::BadMessage { why });
        }
        let display = self.client(conn).and_then(|c| c.account(&account)).and_then(|a| a.display_name.clone());
        // The peer's URI is the dialog's; CPIM only needs a To, so an anonymous one (RFC 3323).
        let to = Identity::new("sip:anonymous@anonymous.invalid", None);
        let from = Identity::from_aor(&account, display.as_deref());
        let body = outgoing::chat_message(&from, &to, &message_id, &timestamp, content, content_type, false)
            .map_err(|e| CallError::BadMessage { why: e.to_string() })?;
        let Some(id) = self.sip.send_message_in_dialog(leg, body.content_type, body.body, self.now, &mut self.rng)
        else {
            return Err(CallError::NoDialog { session, op });
        };
        self.messaging.sent.insert(id, Sent::Session { conn, session, message_id, timestamp });
        Ok(())
    }

    // ===== SIP events =====

    /// The final result of MESSAGE `id` (RFC 3428 §8: any 2xx is success).
    pub(super) fn messaging_result(&mut self, id: MsgId, code: u16, reason: String) {
        let Some(sent) = self.messaging.sent.remove(&id) else { return };
        let ok = (200..300).contains(&code);
        match sent {
            Sent::Quiet => log::debug!("MESSAGE {id:?}: {code} {reason}"),
            Sent::Session { conn, session, message_id, timestamp } => {
                if !self.calls.sessions.contains_key(&(conn, session.clone())) {
                    return;
                }
                let state = if ok { "accepted" } else { "failed" }.to_string();
                let disposition = DispositionFields { message_id, message_timestamp: timestamp, state, code, reason };
                self.emit_event(conn, Event::Messaging(MessagingEvent::SessionDisposition { session, disposition }));
            }
            Sent::Chat { account, target, message_id, timestamp, mut stored } => {
                if !ok && matches!(code, 404 | 408 | 480) {
                    // Not reachable now: kept for the recipient if it is an account of this
                    // store (it finds it in `account-sync-conversations` once back).
                    log::info!("message {message_id} to {target}: {code} {reason}; storing it for {target}");
                    stored.direction = Some(Direction::Incoming);
                    stored.state = Some(MessageState::Received);
                    stored.contact = account.clone();
                    stored.account = target;
                    stored.created_at = self.wall();
                    self.ask(
                        StoreRequest::AddMessage { message: stored, require_account: true },
                        Waiter::Offline { account, message_id, timestamp, code, reason },
                    );
                    return;
                }
                self.report_result(&account, message_id, timestamp, ok, code, reason);
            }
        }
    }

    /// `disposition-notification` `accepted`/`failed` for `account`'s message, to every
    /// connection that has the account, and its state journaled.
    fn report_result(
        &mut self,
        account: &str,
        message_id: String,
        timestamp: String,
        ok: bool,
        code: u16,
        reason: String,
    ) {
        let state = if ok { MessageState::Accepted } else { MessageState::Failed };
        self.ask(
            StoreRequest::UpdateState { account: account.to_string(), message_id: message_id.clone(), state },
            Waiter::Log,
        );
        let disposition = DispositionFields {
            message_id,
            message_timestamp: timestamp,
            state: state.as_str().to_string(),
            code,
            reason,
        };
        let conns = self.conns_with(account, false);
        self.emit_all(&conns, &Self::account_event(account, AccountMessaging::Disposition(disposition)));
    }

    /// An incoming MESSAGE out of dialog for registration `reg`'s Contact (RFC 3428 §7).
    pub(super) fn messaging_incoming(&mut self, id: InboundMsgId, reg: RegId, message: IncomingMessage) {
        let Some((_, account)) = self.regs.get(&reg).cloned() else {
            self.sip.answer_message(id, 404, self.now);
            return;
        };
        let from = Identity::new(format!("sip:{}", message.from_uri), message.display_name.as_deref());
        let incoming = match classify(&message.content_type, &message.body, &from) {
            Ok(incoming) => incoming,
            Err(e) => {
                log::info!("MESSAGE for {account} from {}: {e}; 400", message.from_uri);
                self.sip.answer_message(id, e.status(), self.now);
                return;
            }
        };
        match incoming {
            Incoming::Message(chat) | Incoming::PublicKey(chat) | Incoming::FileTransfer { message: chat, .. } => {
                self.incoming_chat(id, account, chat)
            }
            Incoming::Disposition(report) => {
                let state = report.imdn.state().to_string();
                let disposition = DispositionFields {
                    message_id: report.imdn.message_id.clone(),
                    message_timestamp: report.imdn.datetime.clone(),
                    state: state.clone(),
                    code: 200,
                    reason: String::new(),
                };
                match MessageState::parse(&state) {
                    Some(state) => self.ask(
                        StoreRequest::UpdateState {
                            account: account.clone(),
                            message_id: report.imdn.message_id,
                            state,
                        },
                        Waiter::InboundImdn { id, account, disposition },
                    ),
                    None => {
                        let conns = self.conns_with(&account, true);
                        self.emit_all(
                            &conns,
                            &Self::account_event(&account, AccountMessaging::Disposition(disposition)),
                        );
                        self.sip.answer_message(id, 200, self.now);
                    }
                }
            }
            Incoming::Sync(entry) => {
                let ours = self.messaging.origin.as_deref().is_some_and(|origin| {
                    message
                        .headers
                        .iter()
                        .any(|(n, v)| n.eq_ignore_ascii_case(SYNC_ORIGIN_HEADER) && v.trim() == origin)
                });
                if !ours {
                    let sync = sync_of(&entry);
                    let conns = self.conns_with(&account, true);
                    let event = AccountMessaging::Sync { kind: sync.kind, action: sync.action, content: sync.content };
                    self.emit_all(&conns, &Self::account_event(&account, event));
                }
                self.sip.answer_message(id, 200, self.now);
            }
            Incoming::Composing => self.sip.answer_message(id, 200, self.now),
            Incoming::Api(request) => {
                log::info!("MESSAGE for {account}: SylkServer API request {request:?} not provided; 501");
                self.sip.answer_message(id, 501, self.now);
            }
        }
    }

    fn message_fields(&mut self, chat: ChatMessage) -> MessageFields {
        let timestamp = chat.timestamp.unwrap_or_else(|| iso::format(self.wall()));
        let message_id = chat.message_id.unwrap_or_else(|| self.fresh_id());
        MessageFields {
            sender: Sender { uri: chat.sender.aor(), display_name: chat.sender.display_name },
            timestamp,
            disposition_notification: chat.disposition_notification,
            message_id,
            content: chat.content,
            content_type: chat.content_type,
        }
    }

    fn incoming_chat(&mut self, id: InboundMsgId, account: String, chat: ChatMessage) {
        let message = self.message_fields(chat);
        let stored = NewMessage {
            account: account.clone(),
            contact: message.sender.uri.clone(),
            direction: Some(Direction::Incoming),
            content_type: message.content_type.clone(),
            content: message.content.clone(),
            message_id: message.message_id.clone(),
            timestamp: message.timestamp.clone(),
            disposition: message.disposition_notification.clone().unwrap_or_default(),
            state: Some(MessageState::Received),
            created_at: self.wall(),
        };
        self.ask(
            StoreRequest::AddMessage { message: stored, require_account: true },
            Waiter::Inbound { id, account, message },
        );
    }

    /// A MESSAGE inside call leg `leg`'s dialog (answered 200 already by the stack).
    pub(super) fn messaging_in_dialog(&mut self, leg: crate::sip::calls::LegId, message: IncomingMessage) {
        let Some(call) = self.calls.legs.get(&leg).and_then(|c| self.calls.calls.get(c)) else { return };
        let (conn, session) = (call.conn, call.session.clone());
        let from = Identity::new(format!("sip:{}", message.from_uri), message.display_name.as_deref());
        let event = match classify(&message.content_type, &message.body, &from) {
            Ok(Incoming::Message(chat)) | Ok(Incoming::PublicKey(chat)) => {
                MessagingEvent::SessionMessage { session, message: self.message_fields(chat) }
            }
            Ok(Incoming::Disposition(report)) => MessagingEvent::SessionDisposition {
                session,
                disposition: DispositionFields {
                    message_id: report.imdn.message_id.clone(),
                    message_timestamp: report.imdn.datetime.clone(),
                    state: report.imdn.state().to_string(),
                    code: 200,
                    reason: String::new(),
                },
            },
            Ok(other) => {
                log::debug!("{conn}: in-dialog MESSAGE of session {session} not forwarded: {other:?}");
                return;
            }
            Err(e) => {
                log::info!("{conn}: in-dialog MESSAGE of session {session}: {e}");
                return;
            }
        };
        self.emit_event(conn, Event::Messaging(event));
    }

    // ===== Storage outcomes =====

    /// The outcome of storage request `id`, if messaging asked for it (true), else false.
    pub(super) fn messaging_stored(&mut self, id: StoreId, result: &Result<StoreResult, StoreError>) -> bool {
        let Some(waiter) = self.messaging.waiting.remove(&id) else { return false };
        match waiter {
            Waiter::Log => match result {
                Ok(r) => log::debug!("storage request {id}: {r:?}"),
                Err(e) => log::info!("storage request {id}: {e}"),
            },
            Waiter::Outgoing { conn, transaction, message, body } => match result {
                Ok(StoreResult::Added { outcome }) => {
                    if *outcome != AddOutcome::Duplicate {
                        self.send_account_message(conn, &transaction, message, body.clone());
                    }
                    self.emit_event(conn, Event::Ack { transaction });
                }
                Ok(other) => self.store_mismatch(conn, transaction, other),
                Err(e) => self.store_failed(conn, transaction, e),
            },
            Waiter::Journal { conn, transaction, account } => match result {
                Ok(StoreResult::Journal { entries }) => {
                    self.emit_event(conn, Event::Ack { transaction });
                    let items = entries.iter().cloned().map(journal_item).collect();
                    self.emit_event(conn, Self::account_event(&account, AccountMessaging::SyncConversations(items)));
                }
                Ok(other) => self.store_mismatch(conn, transaction, other),
                Err(e) => self.store_failed(conn, transaction, e),
            },
            Waiter::PublicKey { conn, transaction, uri } => match result {
                Ok(StoreResult::PublicKey { public_key }) => {
                    let event = MessagingEvent::PublicKey { uri, public_key: public_key.clone() };
                    self.emit_event(conn, Event::Messaging(event));
                    self.emit_event(conn, Event::Ack { transaction });
                }
                Ok(other) => self.store_mismatch(conn, transaction, other),
                Err(e) => self.store_failed(conn, transaction, e),
            },
            Waiter::Marker { conn, transaction, account, sync, receiver } => match result {
                Ok(StoreResult::Done | StoreResult::Removed { .. }) => {
                    self.emit_event(conn, Event::Ack { transaction });
                    let others: Vec<ConnId> =
                        self.conns_with(&account, false).into_iter().filter(|&c| c != conn).collect();
                    let event =
                        AccountMessaging::Sync { kind: sync.kind, action: sync.action, content: sync.content.clone() };
                    self.emit_all(&others, &Self::account_event(&account, event));
                    if let Some(entry) = entry_of(&sync) {
                        self.sync_devices(conn, &account, &entry);
                    }
                    if let Some(request) = receiver {
                        let peer = match &request {
                            StoreRequest::RemoveMessage { account, .. } => account.clone(),
                            _ => String::new(),
                        };
                        let mut content = sync.content.clone();
                        content["contact"] = Value::from(account.as_str());
                        content["direction"] = Value::from("incoming");
                        let sync = SyncEvent { kind: "message", action: "remove", content };
                        self.ask(request, Waiter::ReceiverRemove { account: peer, sync });
                    }
                }
                Ok(other) => self.store_mismatch(conn, transaction, other),
                Err(e) => self.store_failed(conn, transaction, e),
            },
            Waiter::ReceiverRemove { account, sync } => {
                if let Ok(StoreResult::Removed { found: true }) = result {
                    let conns = self.conns_with(&account, false);
                    let event = AccountMessaging::Sync { kind: sync.kind, action: sync.action, content: sync.content };
                    self.emit_all(&conns, &Self::account_event(&account, event));
                }
            }
            Waiter::Inbound { id: msg, account, message } => {
                let conns = self.conns_with(&account, true);
                let deliver = !matches!(result, Ok(StoreResult::Added { outcome: AddOutcome::Duplicate }));
                if deliver {
                    self.emit_all(&conns, &Self::account_event(&account, AccountMessaging::Message(message)));
                }
                let code = match result {
                    _ if !conns.is_empty() => 200,
                    Ok(StoreResult::Added { outcome: AddOutcome::Duplicate }) => 200,
                    Ok(_) => 202,
                    Err(StoreError::NotFound) => 404,
                    Err(e) => {
                        log::warn!("MESSAGE for {account} not stored: {e}; 500");
                        500
                    }
                };
                if let Ok(StoreResult::Added { outcome: AddOutcome::Journaled }) = result {
                    self.trim_journal(&account);
                }
                self.sip.answer_message(msg, code, self.now);
            }
            Waiter::InboundImdn { id: msg, account, disposition } => {
                let conns = self.conns_with(&account, true);
                self.emit_all(&conns, &Self::account_event(&account, AccountMessaging::Disposition(disposition)));
                let code = match result {
                    Err(StoreError::Unavailable(_) | StoreError::Corrupt(_) | StoreError::Constraint(_))
                        if conns.is_empty() =>
                    {
                        500
                    }
                    _ => 200,
                };
                self.sip.answer_message(msg, code, self.now);
            }
            Waiter::Offline { account, message_id, timestamp, code, reason } => match result {
                Ok(StoreResult::Added { outcome: AddOutcome::Journaled | AddOutcome::Duplicate }) => {
                    self.report_result(&account, message_id, timestamp, true, 202, "Accepted".into());
                }
                _ => self.report_result(&account, message_id, timestamp, false, code, reason),
            },
        }
        true
    }

    /// `account-message` journaled: the MESSAGE goes out, the other connections get `sync`.
    fn send_account_message(&mut self, conn: ConnId, transaction: &str, message: OutgoingMessage, body: OutgoingBody) {
        self.trim_journal(&message.account);
        // The connection may have gone while the store worked: the message is sent as the
        // account of another connection of this gateway, or journaled `failed` if none is left.
        let mut identity = self.identity(conn, &message.account);
        if identity.is_none() {
            let other = self.conns_with(&message.account, true).into_iter().find(|&c| c != conn);
            identity = other.and_then(|other| self.identity(other, &message.account));
        }
        if identity.is_none() {
            log::info!(
                "account-message {} of {}: no connection has the account any more; journaled as failed",
                message.message_id,
                message.account
            );
            let request = StoreRequest::UpdateState {
                account: message.account.clone(),
                message_id: message.message_id.clone(),
                state: MessageState::Failed,
            };
            self.ask(request, Waiter::Log);
        }
        if let Some(identity) = identity {
            let stored = self.outgoing_entry(&message);
            let id = self.send_sip(identity, &message.uri, body, Vec::new());
            self.messaging.sent.insert(
                id,
                Sent::Chat {
                    account: message.account.clone(),
                    target: message.uri.clone(),
                    message_id: message.message_id.clone(),
                    timestamp: message.timestamp.clone(),
                    stored,
                },
            );
        }
        // `content` is the request object as the client sent it (spec §3.2).
        let mut content = json!({
            "sylkrtc": "account-message",
            "transaction": transaction,
            "account": message.account,
            "uri": message.uri,
            "message_id": message.message_id,
            "content": message.content,
            "content_type": message.content_type,
            "timestamp": message.timestamp,
        });
        if let Some(server_generated) = message.server_generated {
            content["server_generated"] = Value::from(server_generated);
        }
        let others: Vec<ConnId> = self.conns_with(&message.account, false).into_iter().filter(|&c| c != conn).collect();
        let event = AccountMessaging::Sync { kind: "message", action: "add", content };
        self.emit_all(&others, &Self::account_event(&message.account, event));
    }

    fn store_failed(&mut self, conn: ConnId, transaction: String, e: &StoreError) {
        log::warn!("{conn}: messaging request {transaction}: {e}");
        self.emit_event(conn, Event::Error { transaction, error: MessagingError::Storage(e.clone()).to_string() });
    }

    fn store_mismatch(&mut self, conn: ConnId, transaction: String, result: &StoreResult) {
        log::error!("{conn}: messaging request {transaction}: unexpected storage answer {result:?}");
        self.emit_event(conn, Event::Error { transaction, error: ClientError::Internal.to_string() });
    }
}

/// The sync entry a marker's `sync` event stands for (what the other devices get).
fn entry_of(sync: &SyncEvent) -> Option<SyncEntry> {
    let text = |k: &str| sync.content.get(k).and_then(Value::as_str).map(String::from);
    Some(match (sync.kind, sync.action) {
        ("conversation", "read") => SyncEntry::ConversationRead { contact: text("contact")? },
        ("message", "remove") => SyncEntry::MessageRemove {
            contact: text("contact")?,
            message_id: text("message_id")?,
            direction: text("direction")?,
        },
        ("conversation", "remove") => {
            SyncEntry::ConversationRemove { contact: text("contact")?, timestamp: text("timestamp") }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_events_and_device_entries_agree() {
        for entry in [
            SyncEntry::ConversationRead { contact: "bob@example.com".into() },
            SyncEntry::MessageRemove {
                contact: "bob@example.com".into(),
                message_id: "m".into(),
                direction: "outgoing".into(),
            },
            SyncEntry::ConversationRemove { contact: "bob@example.com".into(), timestamp: Some("t".into()) },
        ] {
            assert_eq!(entry_of(&sync_of(&entry)), Some(entry));
        }
    }

    #[test]
    fn errors_read_as_sylkserver_says_them() {
        assert_eq!(
            MessagingError::UnknownAccount { account: "a@b".into() }.to_string(),
            "Unknown account specified: a@b"
        );
        assert_eq!(MessagingError::NotAuthenticated.to_string(), "Account not authenticated");
        assert_eq!(
            MessagingError::Storage(StoreError::Unavailable("down".into())).to_string(),
            "storage unavailable: down"
        );
    }
}
