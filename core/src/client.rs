//! One WebSocket connection's sylkRTC state: its dialect and the accounts it added. Requests
//! are handled here strictly in arrival order, each answered with exactly one `ack` or `error`
//! (events a request causes follow its answer).

use crate::account::{domain_allowed, Account, PushParams};
use crate::api::{Dialect, Event, Request, RequestBody};
use crate::config::Config;
use crate::errors::{AccountOp, ClientError};
use crate::ids::ConnId;
use crate::rng::Rng;
use crate::sip::stack::{PushContact, RegId, RegParams, SipIdentity, SipStack};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The window of `Config::max_requests_per_second`.
const RATE_WINDOW: Duration = Duration::from_secs(1);
pub use crate::errors::{TOO_MANY_ACCOUNTS, TOO_MANY_REQUESTS, TOO_MANY_SESSIONS};
/// WebSocket close code for a policy violation (RFC 6455 §7.4.1).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;

/// What a connection's requests may use of the rest of the gateway.
pub struct SipCtx<'a> {
    /// The SIP stack.
    pub sip: &'a mut SipStack,
    /// The gateway's RNG.
    pub rng: &'a mut Rng,
    /// Now.
    pub now: Instant,
    /// This connection.
    pub conn: ConnId,
    /// Registration → (connection, account), for routing registration events.
    pub regs: &'a mut BTreeMap<RegId, (ConnId, String)>,
}

impl SipCtx<'_> {
    fn unregister(&mut self, id: RegId) {
        self.regs.remove(&id);
        self.sip.unregister(id, self.now, self.rng);
    }
}

/// What [`Client::handle_text`] leaves to the gateway.
#[derive(Debug, Default, PartialEq)]
pub struct Handled {
    /// The WebSocket close (code, reason) to start: the message broke a limit.
    pub close: Option<(u16, &'static str)>,
    /// A session request (calls are the gateway's): it must be answered by the gateway with
    /// exactly one `ack` or `error`, after the events already pushed.
    pub session: Option<Request>,
    /// An `account-register` carried out (its registration started): the gateway answers it,
    /// `ack` at once or, when the next hop needs name resolution, once it is resolved (spec
    /// §2.2: SylkServer resolves first; a failure is the `error` "DNS lookup error: …").
    pub register: Option<Register>,
    /// A messaging request (`api::messaging`) of an account this connection has: the
    /// gateway's messaging machine answers it with exactly one `ack` or `error`.
    pub messaging: Option<Request>,
    /// An addressbook request of a known, authenticated account: the gateway answers it once
    /// the store has (`gateway::addressbook`).
    pub addressbook: Option<(String, crate::api::addressbook::AddressbookRequest)>,
}

/// An `account-register` whose answer is the gateway's ([`Handled::register`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// The request's transaction.
    pub transaction: String,
    /// The account.
    pub account: String,
    /// Its new registration.
    pub reg: RegId,
}

/// Per-connection sylkRTC state.
#[derive(Debug)]
pub struct Client {
    /// Negotiated dialect.
    pub dialect: Dialect,
    accounts: BTreeMap<String, Account>,
    /// When the requests of the last [`RATE_WINDOW`] arrived, oldest first (at most
    /// `Config::max_requests_per_second` entries).
    recent: VecDeque<Instant>,
    /// The type of the last message [`Client::handle_text`] handled (for metrics).
    last_kind: &'static str,
}

impl Client {
    /// A fresh connection.
    pub fn new(dialect: Dialect) -> Self {
        Self { dialect, accounts: BTreeMap::new(), recent: VecDeque::new(), last_kind: "" }
    }

    /// The type of the last message handled: its request type, `invalid` when it did not
    /// decode, `over-rate` when it was over `max_requests_per_second`.
    pub fn last_kind(&self) -> &'static str {
        self.last_kind
    }

    /// Number of accounts added.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Handles one text message; pushes the events to send, in order. Returns what is left to
    /// the gateway: the WebSocket close to start when the message broke a limit (the first
    /// message over `max_requests_per_second` is answered `error` "Too many requests" when it
    /// has a transaction, and closes with 1008), or a session request to carry out.
    pub fn handle_text(&mut self, text: &str, config: &Config, ctx: &mut SipCtx<'_>, out: &mut Vec<Event>) -> Handled {
        if !self.within_rate(ctx.now, config.max_requests_per_second) {
            self.last_kind = "over-rate";
            let transaction = match self.dialect.decode(text) {
                Ok(request) => Some(request.transaction),
                Err(e) => e.reply().and_then(|r| match r {
                    Event::Error { transaction, .. } => Some(transaction),
                    _ => None,
                }),
            };
            log::warn!("{}: more than {} requests per second; closing", ctx.conn, config.max_requests_per_second);
            out.extend(transaction.map(|transaction| Event::Error { transaction, error: TOO_MANY_REQUESTS.into() }));
            return Handled { close: Some((CLOSE_POLICY_VIOLATION, TOO_MANY_REQUESTS)), ..Handled::default() };
        }
        let decoded = self.dialect.decode(text);
        self.last_kind = decoded.as_ref().map_or("invalid", |r| r.body.kind());
        match decoded {
            Ok(request) if is_session_request(&request.body) => {
                if let RequestBody::SessionCreate { account, .. } = &request.body {
                    if let Err(error) = self.known(account, AccountOp::Any) {
                        out.push(Event::Error { transaction: request.transaction, error: error.to_string() });
                        return Handled::default();
                    }
                }
                return Handled { session: Some(request), ..Handled::default() };
            }
            Ok(request @ Request { body: RequestBody::Messaging(_), .. }) => {
                return Handled { messaging: Some(request), ..Handled::default() };
            }
            Ok(Request { transaction, body: RequestBody::Addressbook(request) }) => {
                match self.known(request.account(), AccountOp::Any).and_then(|()| self.authenticated(request.account()))
                {
                    Ok(()) => return Handled { addressbook: Some((transaction, request)), ..Handled::default() },
                    Err(error) => out.push(Event::Error { transaction, error: error.to_string() }),
                }
            }
            Ok(request) => return self.handle_request(request, config, ctx, out),
            Err(e) => {
                log::warn!("{e}");
                out.extend(e.reply());
            }
        }
        Handled::default()
    }

    /// The account `aor` of this connection.
    pub fn account(&self, aor: &str) -> Option<&Account> {
        self.accounts.get(aor)
    }

    /// Counts a request arriving at `now` in the sliding window; false when it is over `max`.
    fn within_rate(&mut self, now: Instant, max: usize) -> bool {
        while self.recent.front().is_some_and(|&t| now.saturating_duration_since(t) >= RATE_WINDOW) {
            self.recent.pop_front();
        }
        if self.recent.len() >= max {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// The connection is gone: every registration it made is removed (`Expires: 0`).
    pub fn release(&mut self, ctx: &mut SipCtx<'_>) {
        for acc in self.accounts.values_mut() {
            if let Some(id) = acc.registration.take() {
                ctx.unregister(id);
            }
        }
    }

    fn handle_request(
        &mut self,
        request: Request,
        config: &Config,
        ctx: &mut SipCtx<'_>,
        out: &mut Vec<Event>,
    ) -> Handled {
        let Request { transaction, body } = request;
        log::debug!("request {} ({transaction})", body.kind());
        let register = match &body {
            RequestBody::AccountRegister { account } => Some(account.clone()),
            _ => None,
        };
        let result = self.apply(body, config, ctx);
        match (result, register) {
            (Ok(()), Some(account)) => {
                let reg = self.accounts.get(&account).and_then(|a| a.registration);
                if let Some(reg) = reg {
                    return Handled { register: Some(Register { transaction, account, reg }), ..Handled::default() };
                }
                out.push(Event::Ack { transaction });
            }
            (Ok(()), None) => out.push(Event::Ack { transaction }),
            (Err(error), _) => {
                log::info!("request failed ({transaction}): {error}");
                out.push(Event::Error { transaction, error: error.to_string() });
            }
        }
        Handled::default()
    }

    /// The registration `reg` of `account` could not start (its next hop did not resolve): it
    /// is removed, as if never made.
    pub fn registration_refused(&mut self, account: &str, reg: RegId, ctx: &mut SipCtx<'_>) {
        if let Some(acc) = self.accounts.get_mut(account).filter(|a| a.registration == Some(reg)) {
            acc.registration = None;
            ctx.unregister(reg);
        }
    }

    /// Carries out a request.
    fn apply(&mut self, body: RequestBody, config: &Config, ctx: &mut SipCtx<'_>) -> Result<(), ClientError> {
        match body {
            RequestBody::Ping => Ok(()),
            RequestBody::AccountAdd { account, password, display_name, user_agent, incoming_header_prefixes } => {
                if self.accounts.contains_key(&account) {
                    return Err(ClientError::AccountExists { account });
                }
                if self.accounts.len() >= config.max_accounts_per_connection {
                    return Err(ClientError::TooManyAccounts);
                }
                let new = Account {
                    aor: account,
                    password,
                    display_name,
                    user_agent,
                    incoming_header_prefixes,
                    push: None,
                    registration: None,
                    authenticated: false,
                };
                if !domain_allowed(new.domain(), &config.sip_domains) {
                    return Err(ClientError::DomainNotAllowed { domain: new.domain().to_string() });
                }
                log::info!("account {} added", new.aor);
                self.accounts.insert(new.aor.clone(), new);
                Ok(())
            }
            RequestBody::AccountRemove { account } => match self.accounts.remove(&account) {
                Some(mut acc) => {
                    if let Some(id) = acc.registration.take() {
                        ctx.unregister(id);
                    }
                    log::info!("account {account} removed");
                    Ok(())
                }
                None => Err(ClientError::UnknownAccount { account, op: AccountOp::Remove }),
            },
            RequestBody::AccountRegister { account } => {
                let acc = self
                    .accounts
                    .get_mut(&account)
                    .ok_or_else(|| ClientError::UnknownAccount { account: account.clone(), op: AccountOp::Register })?;
                // Re-sending account-register registers from scratch (spec §2.2).
                if let Some(old) = acc.registration.take() {
                    ctx.unregister(old);
                }
                let params = RegParams {
                    identity: SipIdentity {
                        aor: acc.aor.clone(),
                        secret: acc.password.clone(),
                        display_name: acc.display_name.clone(),
                        user_agent: acc.user_agent.clone(),
                        contact_user: contact_user(&acc.aor, ctx.rng),
                    },
                    push: acc.push.as_ref().map(|p| PushContact {
                        app: p.app.clone(),
                        token: p.token.clone(),
                        platform: p.platform.clone(),
                        device: p.device.clone(),
                        silent: p.silent,
                    }),
                };
                let id = ctx.sip.register(params, ctx.now, ctx.rng);
                ctx.regs.insert(id, (ctx.conn, acc.aor.clone()));
                acc.registration = Some(id);
                Ok(())
            }
            RequestBody::AccountUnregister { account } => {
                let acc = self
                    .accounts
                    .get_mut(&account)
                    .ok_or_else(|| ClientError::UnknownAccount { account: account.clone(), op: AccountOp::Unregister })?;
                // No event follows (spec §2.2); the client resets its state on the ack.
                if let Some(id) = acc.registration.take() {
                    ctx.unregister(id);
                }
                Ok(())
            }
            RequestBody::AccountDeviceToken { account, token, platform, device, silent, app } => {
                let acc = self
                    .accounts
                    .get_mut(&account)
                    .ok_or_else(|| ClientError::UnknownAccount { account: account.clone(), op: AccountOp::Token })?;
                acc.push = Some(PushParams { token, platform, device, silent, app });
                Ok(())
            }
            RequestBody::SessionCreate { .. }
            | RequestBody::SessionAnswer { .. }
            | RequestBody::SessionTrickle { .. }
            | RequestBody::SessionTerminate { .. }
            | RequestBody::SessionUpdate { .. }
            | RequestBody::SessionMessage { .. }
            | RequestBody::Addressbook(_)
            | RequestBody::Videoroom(_)
            // Routed to the gateway by `handle_text`, never here.
            | RequestBody::SessionDtmfInfo { .. }
            | RequestBody::Messaging(_) => Err(ClientError::Internal),
            RequestBody::Unsupported { kind, account } => {
                if let Some(account) = account {
                    self.known(&account, AccountOp::Any)?;
                }
                Err(ClientError::NotSupported { kind })
            }
        }
    }

    /// Whether `account` reached `registered` on this connection (spec §2.2 "auth required").
    fn authenticated(&self, account: &str) -> Result<(), ClientError> {
        match self.accounts.get(account) {
            Some(acc) if acc.authenticated => Ok(()),
            _ => Err(ClientError::NotAuthenticated),
        }
    }

    /// `account`'s registration succeeded: it may use the addressbook and messaging from now on.
    pub fn mark_authenticated(&mut self, account: &str) {
        if let Some(acc) = self.accounts.get_mut(account) {
            acc.authenticated = true;
        }
    }

    fn known(&self, account: &str, op: AccountOp) -> Result<(), ClientError> {
        if self.accounts.contains_key(account) {
            Ok(())
        } else {
            Err(ClientError::UnknownAccount { account: account.to_string(), op })
        }
    }
}

/// Whether `body` is about a call (carried out by the gateway's call layer).
fn is_session_request(body: &RequestBody) -> bool {
    matches!(
        body,
        RequestBody::SessionCreate { .. }
            | RequestBody::SessionAnswer { .. }
            | RequestBody::SessionTrickle { .. }
            | RequestBody::SessionTerminate { .. }
            | RequestBody::SessionUpdate { .. }
            | RequestBody::SessionMessage { .. }
            | RequestBody::SessionDtmfInfo { .. }
            | RequestBody::Videoroom(_)
    )
}

/// Our Contact's user part for an account on this connection: the AOR's user, made safe, and a
/// random suffix so two connections with the same account get distinct bindings.
pub(crate) fn contact_user(aor: &str, rng: &mut Rng) -> String {
    let user = aor.split_once('@').map_or(aor, |(u, _)| u);
    let safe: String = user.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.!~*'()".contains(*c)).collect();
    format!("{}-{}", if safe.is_empty() { "u" } else { &safe }, rng.hex(8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api;

    fn run(c: &mut Client, cfg: &Config, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut sip = SipStack::new(cfg.sip.clone());
        let mut rng = Rng::new([1; 32]);
        let mut regs = BTreeMap::new();
        let now = crate::time::test_epoch();
        let mut ctx = SipCtx { sip: &mut sip, rng: &mut rng, now, conn: ConnId(1), regs: &mut regs };
        assert_eq!(c.handle_text(text, cfg, &mut ctx, &mut out), Handled::default());
        out.iter().map(api::sylkrtc2::encode).collect()
    }

    #[test]
    fn accounts_per_connection() {
        let cfg = Config { max_accounts_per_connection: 2, ..Config::default() };
        let mut c = Client::new(Dialect::V2);
        let add = |t: u32, user: &str| {
            format!(r#"{{"sylkrtc":"account-add","transaction":"{t}","account":"{user}@example.com","password":"x"}}"#)
        };
        assert_eq!(run(&mut c, &cfg, &add(1, "a")), [r#"{"sylkrtc":"ack","transaction":"1"}"#]);
        assert_eq!(run(&mut c, &cfg, &add(2, "b")), [r#"{"sylkrtc":"ack","transaction":"2"}"#]);
        let too_many = r#"{"sylkrtc":"error","transaction":"3","error":"Too many accounts on this connection"}"#;
        assert_eq!(run(&mut c, &cfg, &add(3, "c")), [too_many]);
        // A duplicate is still reported as one; a removal makes room again.
        let dup = r#"{"sylkrtc":"error","transaction":"4","error":"Account a@example.com already added"}"#;
        assert_eq!(run(&mut c, &cfg, &add(4, "a")), [dup]);
        let rm = r#"{"sylkrtc":"account-remove","transaction":"5","account":"a@example.com"}"#;
        assert_eq!(run(&mut c, &cfg, rm), [r#"{"sylkrtc":"ack","transaction":"5"}"#]);
        assert_eq!(run(&mut c, &cfg, &add(6, "c")), [r#"{"sylkrtc":"ack","transaction":"6"}"#]);
        assert_eq!(c.account_count(), 2);
    }

    #[test]
    fn requests_per_second_slide() {
        let cfg = Config { max_requests_per_second: 3, ..Config::default() };
        let mut c = Client::new(Dialect::V2);
        let mut sip = SipStack::new(cfg.sip.clone());
        let mut rng = Rng::new([1; 32]);
        let mut regs = BTreeMap::new();
        let t0 = crate::time::test_epoch();
        let mut send = |ms: u64, text: &str| {
            let now = t0 + Duration::from_millis(ms);
            let mut ctx = SipCtx { sip: &mut sip, rng: &mut rng, now, conn: ConnId(1), regs: &mut regs };
            let mut out = Vec::new();
            let close = c.handle_text(text, &cfg, &mut ctx, &mut out).close;
            (out.iter().map(api::sylkrtc2::encode).collect::<Vec<_>>(), close)
        };
        let ping = |t: u32| format!(r#"{{"sylkrtc":"ping","transaction":"{t}"}}"#);
        let ack = |t: u32| vec![format!(r#"{{"sylkrtc":"ack","transaction":"{t}"}}"#)];
        assert_eq!(send(0, &ping(1)), (ack(1), None));
        assert_eq!(send(100, &ping(2)), (ack(2), None));
        // Garbage counts as a request too.
        assert_eq!(send(200, "{nope"), (vec![], None));
        // 1 s after the first, it has left the window: room for one more.
        assert_eq!(send(1000, &ping(3)), (ack(3), None));
        let over = r#"{"sylkrtc":"error","transaction":"4","error":"Too many requests"}"#;
        assert_eq!(send(1099, &ping(4)), (vec![over.to_string()], Some((1008, "Too many requests"))));
        // Over the limit without a transaction: no error event, still closed.
        assert_eq!(send(1099, "{nope").1, Some((1008, "Too many requests")));
    }

    #[test]
    fn account_lifecycle() {
        let cfg = Config { sip_domains: vec!["example.com".into()], ..Config::default() };
        let mut c = Client::new(Dialect::V2);
        let add = r#"{"sylkrtc":"account-add","transaction":"1","account":"alice@example.com","password":"b1726872c344b6dc8365b774f8fd6412"}"#;
        assert_eq!(run(&mut c, &cfg, add), [r#"{"sylkrtc":"ack","transaction":"1"}"#]);
        assert_eq!(
            run(&mut c, &cfg, add),
            [r#"{"sylkrtc":"error","transaction":"1","error":"Account alice@example.com already added"}"#]
        );
        let other = r#"{"sylkrtc":"account-add","transaction":"2","account":"bob@evil.test","password":"x"}"#;
        assert_eq!(
            run(&mut c, &cfg, other),
            [r#"{"sylkrtc":"error","transaction":"2","error":"SIP domain not allowed: evil.test"}"#]
        );
        let rm = r#"{"sylkrtc":"account-remove","transaction":"3","account":"alice@example.com"}"#;
        assert_eq!(run(&mut c, &cfg, rm), [r#"{"sylkrtc":"ack","transaction":"3"}"#]);
        assert_eq!(
            run(&mut c, &cfg, rm),
            [
                r#"{"sylkrtc":"error","transaction":"3","error":"Unknown account specified for remove: alice@example.com"}"#
            ]
        );
        assert_eq!(c.account_count(), 0);
    }

    #[test]
    fn garbage_and_unknown() {
        let cfg = Config::default();
        let mut c = Client::new(Dialect::V2);
        assert!(run(&mut c, &cfg, "{nope").is_empty());
        assert!(run(&mut c, &cfg, r#"{"transaction":"1"}"#).is_empty());
        assert!(run(&mut c, &cfg, r#"{"sylkrtc":"bogus"}"#).is_empty());
        assert_eq!(
            run(&mut c, &cfg, r#"{"sylkrtc":"bogus","transaction":"9"}"#),
            [r#"{"sylkrtc":"error","transaction":"9","error":"Unknown request type: bogus"}"#]
        );
    }
}
