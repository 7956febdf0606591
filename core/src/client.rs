//! One WebSocket connection's sylkRTC state: its dialect and the accounts it added. Requests
//! are handled here strictly in arrival order, each answered with exactly one `ack` or `error`
//! (events a request causes follow its answer).

use crate::account::{domain_allowed, Account, PushParams};
use crate::api::{self, Dialect, Event, Request, RequestBody};
use crate::config::Config;
use crate::ids::ConnId;
use crate::rng::Rng;
use crate::sip::stack::{PushContact, RegId, RegParams, SipIdentity, SipStack};
use std::collections::BTreeMap;
use std::time::Instant;

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

/// Per-connection sylkRTC state.
#[derive(Debug)]
pub struct Client {
    /// Negotiated dialect.
    pub dialect: Dialect,
    accounts: BTreeMap<String, Account>,
}

impl Client {
    /// A fresh connection.
    pub fn new(dialect: Dialect) -> Self {
        Self { dialect, accounts: BTreeMap::new() }
    }

    /// Number of accounts added.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Handles one text message; pushes the events to send, in order.
    pub fn handle_text(&mut self, text: &str, config: &Config, ctx: &mut SipCtx<'_>, out: &mut Vec<Event>) {
        match api::decode(text) {
            Ok(request) => self.handle_request(request, config, ctx, out),
            Err(e) => {
                log::warn!("{e}");
                out.extend(e.reply());
            }
        }
    }

    /// The connection is gone: every registration it made is removed (`Expires: 0`).
    pub fn release(&mut self, ctx: &mut SipCtx<'_>) {
        for acc in self.accounts.values_mut() {
            if let Some(id) = acc.registration.take() {
                ctx.unregister(id);
            }
        }
    }

    fn handle_request(&mut self, request: Request, config: &Config, ctx: &mut SipCtx<'_>, out: &mut Vec<Event>) {
        let Request { transaction, body } = request;
        log::debug!("request {} ({transaction})", body.kind());
        let result = self.apply(body, config, ctx);
        match result {
            Ok(()) => out.push(Event::Ack { transaction }),
            Err(error) => {
                log::info!("request failed ({transaction}): {error}");
                out.push(Event::Error { transaction, error });
            }
        }
    }

    /// Carries out a request. The `Err` text is the protocol's error string.
    fn apply(&mut self, body: RequestBody, config: &Config, ctx: &mut SipCtx<'_>) -> Result<(), String> {
        match body {
            RequestBody::Ping => Ok(()),
            RequestBody::AccountAdd { account, password, display_name, user_agent, incoming_header_prefixes } => {
                if self.accounts.contains_key(&account) {
                    return Err(format!("Account {account} already added"));
                }
                let new = Account {
                    aor: account,
                    password,
                    display_name,
                    user_agent,
                    incoming_header_prefixes,
                    push: None,
                    registration: None,
                };
                if !domain_allowed(new.domain(), &config.sip_domains) {
                    return Err(format!("SIP domain not allowed: {}", new.domain()));
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
                None => Err(format!("Unknown account specified for remove: {account}")),
            },
            RequestBody::AccountRegister { account } => {
                let acc = self
                    .accounts
                    .get_mut(&account)
                    .ok_or_else(|| format!("Unknown account specified for register: {account}"))?;
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
                    .ok_or_else(|| format!("Unknown account specified for unregister: {account}"))?;
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
                    .ok_or_else(|| format!("Unknown account specified for token: {account}"))?;
                acc.push = Some(PushParams { token, platform, device, silent, app });
                Ok(())
            }
            RequestBody::SessionCreate { account, .. } => {
                self.known(&account, "Unknown account specified: ")?;
                Err(not_supported("session-create"))
            }
            RequestBody::SessionAnswer { session, .. }
            | RequestBody::SessionTrickle { session, .. }
            | RequestBody::SessionTerminate { session }
            | RequestBody::SessionUpdate { session, .. }
            | RequestBody::SessionMessage { session, .. }
            | RequestBody::SessionDtmfInfo { session, .. } => Err(format!("Unknown session {session}")),
            RequestBody::Unsupported { kind, account } => {
                if let Some(account) = account {
                    self.known(&account, "Unknown account specified: ")?;
                }
                Err(not_supported(kind))
            }
        }
    }

    fn known(&self, account: &str, unknown: &str) -> Result<(), String> {
        if self.accounts.contains_key(account) {
            Ok(())
        } else {
            Err(format!("{unknown}{account}"))
        }
    }
}

/// Our Contact's user part for an account on this connection: the AOR's user, made safe, and a
/// random suffix so two connections with the same account get distinct bindings.
fn contact_user(aor: &str, rng: &mut Rng) -> String {
    let user = aor.split_once('@').map_or(aor, |(u, _)| u);
    let safe: String = user.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.!~*'()".contains(*c)).collect();
    format!("{}-{}", if safe.is_empty() { "u" } else { &safe }, rng.hex(8))
}

fn not_supported(kind: &str) -> String {
    format!("{kind} is not supported yet")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: &mut Client, cfg: &Config, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut sip = SipStack::new(cfg.sip.clone());
        let mut rng = Rng::new([1; 32]);
        let mut regs = BTreeMap::new();
        #[allow(clippy::disallowed_methods)] // an epoch for the test
        let now = Instant::now();
        let mut ctx = SipCtx { sip: &mut sip, rng: &mut rng, now, conn: ConnId(1), regs: &mut regs };
        c.handle_text(text, cfg, &mut ctx, &mut out);
        out.iter().map(api::sylkrtc2::encode).collect()
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
