//! One WebSocket connection's sylkRTC state: its dialect and the accounts it added. Requests
//! are handled here strictly in arrival order, each answered with exactly one `ack` or `error`
//! (events a request causes follow its answer).

use crate::account::{domain_allowed, Account, PushParams};
use crate::api::{self, Dialect, Event, Request, RequestBody};
use crate::config::Config;
use std::collections::BTreeMap;

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
    pub fn handle_text(&mut self, text: &str, config: &Config, out: &mut Vec<Event>) {
        match api::decode(text) {
            Ok(request) => self.handle_request(request, config, out),
            Err(e) => {
                log::warn!("{e}");
                out.extend(e.reply());
            }
        }
    }

    fn handle_request(&mut self, request: Request, config: &Config, out: &mut Vec<Event>) {
        let Request { transaction, body } = request;
        log::debug!("request {} ({transaction})", body.kind());
        let result = self.apply(body, config);
        match result {
            Ok(()) => out.push(Event::Ack { transaction }),
            Err(error) => {
                log::info!("request failed ({transaction}): {error}");
                out.push(Event::Error { transaction, error });
            }
        }
    }

    /// Carries out a request. The `Err` text is the protocol's error string.
    fn apply(&mut self, body: RequestBody, config: &Config) -> Result<(), String> {
        match body {
            RequestBody::Ping => Ok(()),
            RequestBody::AccountAdd { account, password, display_name, user_agent, incoming_header_prefixes } => {
                if self.accounts.contains_key(&account) {
                    return Err(format!("Account {account} already added"));
                }
                let new =
                    Account { aor: account, password, display_name, user_agent, incoming_header_prefixes, push: None };
                if !domain_allowed(new.domain(), &config.sip_domains) {
                    return Err(format!("SIP domain not allowed: {}", new.domain()));
                }
                log::info!("account {} added", new.aor);
                self.accounts.insert(new.aor.clone(), new);
                Ok(())
            }
            RequestBody::AccountRemove { account } => match self.accounts.remove(&account) {
                Some(_) => {
                    log::info!("account {account} removed");
                    Ok(())
                }
                None => Err(format!("Unknown account specified for remove: {account}")),
            },
            RequestBody::AccountRegister { account } => {
                self.known(&account, "Unknown account specified for register: ")?;
                Err(not_supported("account-register"))
            }
            RequestBody::AccountUnregister { account } => {
                self.known(&account, "Unknown account specified for unregister: ")?;
                Err(not_supported("account-unregister"))
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

fn not_supported(kind: &str) -> String {
    format!("{kind} is not supported yet")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: &mut Client, cfg: &Config, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        c.handle_text(text, cfg, &mut out);
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
