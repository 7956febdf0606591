//! The gateway's storage users besides messaging: the addressbook requests (spec §2.2, events
//! §3.2) and the HTTP history endpoint (§6.3, `http::history`). Each asks the store
//! ([`Gateway::store`]) and is answered when the outcome comes back ([`Gateway::book_stored`]):
//! - `account-fetch-addressbook`: `ack` then `addressbook-fetched`; a store failure is the
//!   request's `error` (`storage unavailable: …`).
//! - `account-update-addressbook`: `ack` then `addressbook-updated` to this connection and to
//!   every other connection that has the account (SylkServer `_fork_event_to_online_accounts`),
//!   or `addressbook-update-failed` with the store's reason (a missing item for `update`/`delete`
//!   is `<type> <id> not found`).
//! - history: the HTTP connection waits (`Phase::Answering`) for the store, then gets the JSON
//!   or `401`, and closes. The HTTP handshake timer still runs: a store slower than
//!   `http_handshake_timeout` loses the connection, and its late answer is dropped.
//! - API tokens for the history (SylkServer `_handle_generate_token`): a MESSAGE of type
//!   `application/sylk-api-token` from an account to its own registration here is answered
//!   once the store has the account (`TouchAccount`) and a fresh token (`SetApiToken`, valid
//!   31 days): 200, then a MESSAGE of that type to the account with `{"token", "url"}`. A
//!   request from anyone else is 403; a MESSAGE that already carries a token (our own answer,
//!   forked back to us by the proxy) is only acknowledged.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Conn, Gateway, Phase};
use crate::api::addressbook::{AddressbookEvent, AddressbookRequest};
use crate::api::{AccountEvent, Event};
use crate::http::history::{self, HistoryQuery, Route, HISTORY_LIMIT};
use crate::ids::ConnId;
use crate::sip::stack::{InboundMsgId, IncomingMessage, MessageParams, RegId, SipIdentity};
use crate::storage::{AddressbookAction, AddressbookKind, StoreError, StoreId, StoreRequest, StoreResult, UnixMicros};

/// Storage requests of this module waiting for their outcome.
#[derive(Debug, Default)]
pub(super) struct Book {
    waits: BTreeMap<StoreId, Wait>,
}

/// Who waits for a storage outcome, and what to answer with it.
#[derive(Debug)]
enum Wait {
    Fetch {
        conn: ConnId,
        transaction: String,
        account: String,
    },
    Update {
        conn: ConnId,
        transaction: String,
        account: String,
        kind: AddressbookKind,
        action: AddressbookAction,
        id: String,
        item: Value,
    },
    History {
        conn: ConnId,
        query: HistoryQuery,
    },
    /// An API token MESSAGE waits for `TouchAccount`.
    TokenAccount {
        msg: InboundMsgId,
        conn: ConnId,
        account: String,
    },
    /// … then for `SetApiToken`.
    TokenSet {
        msg: InboundMsgId,
        conn: ConnId,
        account: String,
        token: String,
    },
}

/// Whether an incoming MESSAGE asks for (or carries) a history API token.
pub(super) fn is_api_token(message: &IncomingMessage) -> bool {
    message.content_type.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(history::API_TOKEN_TYPE))
}

impl Gateway {
    /// The registration of `account` on `conn` succeeded: the account is authenticated.
    pub(super) fn mark_authenticated(&mut self, conn: ConnId, account: &str) {
        if let Some(Conn { phase: Phase::Ws(s), .. }) = self.conns.get_mut(&conn) {
            s.client.mark_authenticated(account);
        }
    }

    /// An addressbook request of a known, authenticated account of `conn` (checked by the
    /// client): asks the store; the answer follows its outcome.
    pub(super) fn addressbook_request(&mut self, conn: ConnId, transaction: String, request: AddressbookRequest) {
        let (ask, wait) = match request {
            AddressbookRequest::Fetch { account } => (
                StoreRequest::FetchAddressbook { account: account.clone() },
                Wait::Fetch { conn, transaction, account },
            ),
            AddressbookRequest::Update { account, action, kind, id, item } => (
                StoreRequest::UpdateAddressbook {
                    account: account.clone(),
                    kind,
                    action,
                    id: id.clone(),
                    data: item.clone(),
                    max_items: self.config.max_addressbook_items,
                },
                Wait::Update { conn, transaction, account, kind, action, id, item },
            ),
        };
        let id = self.store(ask);
        self.book.waits.insert(id, wait);
    }

    /// A request for the history endpoint on HTTP connection `conn`: answered now, or once the
    /// store has checked the token.
    pub(super) fn history_http(&mut self, conn: ConnId, route: Route) {
        match route {
            Route::Answer(response) => self.reject(conn, response),
            Route::Ask(query) => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                c.phase = Phase::Answering;
                let now = UnixMicros(i64::try_from(self.unix_now().as_micros()).unwrap_or(i64::MAX));
                let id = self.store(StoreRequest::History {
                    account: query.account.clone(),
                    token: query.token.clone(),
                    message_id: query.message_id.clone(),
                    now,
                    limit: HISTORY_LIMIT,
                });
                self.book.waits.insert(id, Wait::History { conn, query });
            }
        }
    }

    fn unix_micros(&self) -> UnixMicros {
        UnixMicros(i64::try_from(self.unix_now().as_micros()).unwrap_or(i64::MAX))
    }

    /// A MESSAGE of type `application/sylk-api-token` (`is_api_token`) for registration `reg`.
    pub(super) fn api_token_request(&mut self, msg: InboundMsgId, reg: RegId, message: &IncomingMessage) {
        let Some((conn, account)) = self.regs.get(&reg).cloned() else {
            self.sip.answer_message(msg, 404, self.now);
            return;
        };
        let carries_token = serde_json::from_slice::<Value>(&message.body).is_ok_and(|v| v.get("token").is_some());
        if carries_token {
            self.sip.answer_message(msg, 200, self.now);
            return;
        }
        let from = crate::api::normalize_aor(&message.from_uri).unwrap_or_else(|| message.from_uri.clone());
        if !from.eq_ignore_ascii_case(&account) {
            log::info!("{conn}: {from} asked for the history token of {account}; refused");
            self.sip.answer_message(msg, 403, self.now);
            return;
        }
        let id = self.store(StoreRequest::TouchAccount { account: account.clone(), now: self.unix_micros() });
        self.book.waits.insert(id, Wait::TokenAccount { msg, conn, account });
    }

    /// Sends `account` (of connection `conn`) its token; false when the account is gone.
    fn send_token(&mut self, conn: ConnId, account: &str, token: &str) -> bool {
        let Some(acc) = self.client(conn).and_then(|c| c.account(account)).cloned() else { return false };
        let identity = SipIdentity {
            contact_user: crate::client::contact_user(&acc.aor, &mut self.rng),
            aor: acc.aor,
            secret: acc.password,
            display_name: acc.display_name,
            user_agent: acc.user_agent,
        };
        let body = history::token_body(token, self.config.web_url.as_deref(), account);
        let params = MessageParams {
            identity,
            target: account.to_string(),
            content_type: history::API_TOKEN_TYPE.into(),
            body: body.into_bytes(),
            headers: Vec::new(),
        };
        self.sip.send_message(params, self.now, &mut self.rng);
        true
    }

    /// Takes the outcome of storage request `id` if this module asked for it; hands it back
    /// otherwise.
    pub(super) fn book_stored(
        &mut self,
        id: StoreId,
        result: Result<StoreResult, StoreError>,
    ) -> Option<Result<StoreResult, StoreError>> {
        let Some(wait) = self.book.waits.remove(&id) else { return Some(result) };
        match wait {
            Wait::Fetch { conn, transaction, account } => {
                let events = match result {
                    Ok(StoreResult::Addressbook { addressbook }) => vec![
                        Event::Ack { transaction },
                        Event::Account {
                            account,
                            event: AccountEvent::Addressbook(AddressbookEvent::Fetched(addressbook)),
                        },
                    ],
                    Ok(other) => {
                        log::error!("storage request {id}: {other:?} answers a fetch-addressbook");
                        vec![Event::Error { transaction, error: crate::errors::ClientError::Internal.to_string() }]
                    }
                    Err(e) => {
                        log::warn!("{conn}: account-fetch-addressbook for {account}: {e}");
                        vec![Event::Error { transaction, error: e.to_string() }]
                    }
                };
                for e in &events {
                    self.send_event(conn, e);
                }
                self.flush(conn);
            }
            Wait::Update { conn, transaction, account, kind, action, id: item_id, item } => {
                let event = match result {
                    Ok(StoreResult::Done) => AddressbookEvent::Updated { kind, action, item },
                    outcome => {
                        let error = match outcome {
                            Err(StoreError::NotFound) => format!("{} {item_id} not found", kind.as_str()),
                            Err(e) => e.to_string(),
                            Ok(other) => {
                                log::error!("storage request {id}: {other:?} answers an update-addressbook");
                                crate::errors::ClientError::Internal.to_string()
                            }
                        };
                        log::info!("{conn}: account-update-addressbook for {account}: {error}");
                        AddressbookEvent::UpdateFailed { kind, action, error, id: item_id }
                    }
                };
                let forked = matches!(event, AddressbookEvent::Updated { .. });
                let event = Event::Account { account: account.clone(), event: AccountEvent::Addressbook(event) };
                self.send_event(conn, &Event::Ack { transaction });
                self.send_event(conn, &event);
                self.flush(conn);
                if forked {
                    self.fork_to_account(conn, &account, &event);
                }
            }
            Wait::TokenAccount { msg, conn, account } => match result {
                Ok(StoreResult::Done) => {
                    let mut random = [0u8; 32];
                    self.rng.fill(&mut random);
                    let token = history::new_token(&random);
                    let expires_at =
                        UnixMicros(self.unix_micros().0.saturating_add(history::API_TOKEN_LIFETIME_SECS * 1_000_000));
                    let id = self.store(StoreRequest::SetApiToken {
                        account: account.clone(),
                        token: token.clone(),
                        expires_at,
                    });
                    self.book.waits.insert(id, Wait::TokenSet { msg, conn, account, token });
                }
                other => {
                    log::warn!("{conn}: history token for {account}: the store answered {other:?}");
                    self.sip.answer_message(msg, 500, self.now);
                }
            },
            Wait::TokenSet { msg, conn, account, token } => match result {
                Ok(StoreResult::Done) => {
                    // The token goes to the account as SylkServer sends it: a MESSAGE after the answer.
                    let sent = self.client(conn).is_some_and(|c| c.account(&account).is_some());
                    self.sip.answer_message(msg, if sent { 200 } else { 480 }, self.now);
                    if sent {
                        log::info!("{conn}: history token issued for {account}");
                        self.send_token(conn, &account, &token);
                    }
                }
                other => {
                    log::warn!("{conn}: history token for {account}: the store answered {other:?}");
                    self.sip.answer_message(msg, 500, self.now);
                }
            },
            Wait::History { conn, query } => {
                let response = history::answer(&query, &result);
                if let Some(c) = self.conns.get(&conn) {
                    log::info!("{conn}: HTTP {} history of {} for {}", response.status, query.account, c.peer);
                    self.write_plain(conn, &response.to_bytes());
                    self.close_now(conn);
                }
            }
        }
        None
    }

    /// Sends `event` to every connection but `from` that has `account`.
    fn fork_to_account(&mut self, from: ConnId, account: &str, event: &Event) {
        let others: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(id, c)| **id != from && matches!(&c.phase, Phase::Ws(s) if s.client.account(account).is_some()))
            .map(|(id, _)| *id)
            .collect();
        for id in others {
            self.send_event(id, event);
            self.flush(id);
        }
    }
}
