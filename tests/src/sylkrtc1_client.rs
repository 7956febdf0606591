//! A `sylkRTC-1` client that reads the server's messages the way sylkrtc.js 0.9.6 (the last
//! release speaking sylkRTC-1, September 2017) does: `lib/connection.js` `_onMessage`,
//! `lib/account.js` `_handleEvent`, `lib/call.js` `_initIncoming` / `_handleEvent`. No code of
//! the library is reproduced; this is a model of which fields it reads, so a test sees what an
//! application on 0.9.6 would see.
//!
//! Where 0.9.6 would throw (a property read on `undefined`, `mungeSdp(undefined)` on an
//! `accepted` without `sdp`), [`Client096::read`] returns an `Err` naming the field. Where it
//! would silently read `undefined` (the caller's `uri` when `originator` is a string), the value
//! is `None`.

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A caller or callee as 0.9.6's `utils.Identity` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `originator.uri` (`None`: JavaScript `undefined`).
    pub uri: Option<String>,
    /// `originator.display_name` (`None`: `undefined` or `null`).
    pub display_name: Option<String>,
}

/// What the application on 0.9.6 is told (the library's emitted events and callbacks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppEvent {
    /// `Connection` state `ready`.
    Ready,
    /// A request's callback: `None` on `ack`, the `Error` message on `error`.
    Answer { transaction: String, error: Option<String> },
    /// `Account` `registrationStateChanged`.
    RegistrationStateChanged { account: String, old: Option<String>, new: String, reason: Option<String> },
    /// `Account` `incomingCall`.
    IncomingCall { account: String, session: String, remote: Identity, sdp: String },
    /// `Account` `missedCall`.
    MissedCall { account: String, originator: Identity },
    /// `Call` `stateChanged`.
    CallStateChanged { session: String, old: Option<String>, new: String, reason: Option<String> },
    /// An outgoing call got its answer: 0.9.6 applies `sdp` as the remote description (and, when
    /// that succeeds, fakes `established`: [`Client096::answer_applied`]).
    RemoteAnswer { session: String, sdp: String },
}

/// One call, as 0.9.6's `Call` holds it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `outgoing` or `incoming`.
    pub direction: &'static str,
    /// `Call.state`.
    pub state: Option<String>,
    /// `Call.remoteIdentity`.
    pub remote: Identity,
}

/// One account.
#[derive(Debug, Clone, Default)]
pub struct Account {
    /// `Account.registrationState`.
    pub registration_state: Option<String>,
    /// Its calls by session id.
    pub calls: BTreeMap<String, Call>,
}

/// The connection's state as 0.9.6 keeps it.
#[derive(Debug, Default)]
pub struct Client096 {
    /// `ready` came.
    pub ready: bool,
    /// Accounts by id (as added).
    pub accounts: BTreeMap<String, Account>,
    /// Requests sent and not answered: transaction → type.
    pub pending: BTreeMap<String, String>,
    next: u32,
}

fn str_at(v: &Value, path: &[&str]) -> Result<String, String> {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        cur = cur.get(key).ok_or_else(|| format!("TypeError: `{}` is undefined", path[..=i].join(".")))?;
    }
    cur.as_str().map(String::from).ok_or_else(|| format!("`{}` is not a string: {cur}", path.join(".")))
}

/// A property read that JavaScript lets through: `undefined` (or `null`) is `None`, and reading
/// a property of a string is `undefined` too.
fn lenient(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(String::from)
}

impl Client096 {
    /// A fresh connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// A request of `kind` with `fields`, as the library builds it; returns (transaction, text).
    pub fn request(&mut self, kind: &str, mut fields: Value) -> (String, String) {
        self.next += 1;
        let transaction = format!("t{}", self.next);
        fields["sylkrtc"] = json!(kind);
        fields["transaction"] = json!(transaction);
        self.pending.insert(transaction.clone(), kind.to_string());
        (transaction, fields.to_string())
    }

    /// `connection.addAccount`: the account exists client-side at once.
    pub fn add_account(&mut self, account: &str, ha1: &str, display_name: &str) -> (String, String) {
        self.accounts.entry(account.to_string()).or_default();
        self.request(
            "account-add",
            json!({"account": account, "password": ha1, "display_name": display_name, "user_agent": "SylkRTC 0.9.6 model"}),
        )
    }

    /// `account.call(uri)`: the call exists client-side at once, state `null`.
    pub fn call(&mut self, account: &str, session: &str, uri: &str, sdp: &str) -> (String, String) {
        let remote = Identity { uri: Some(uri.to_string()), display_name: None };
        let call = Call { direction: "outgoing", state: None, remote };
        self.accounts.get_mut(account).expect("an added account").calls.insert(session.to_string(), call);
        self.request("session-create", json!({"account": account, "session": session, "uri": uri, "sdp": sdp}))
    }

    /// 0.9.6's success callback of `setRemoteDescription` for an outgoing call: the state
    /// becomes `established`.
    pub fn answer_applied(&mut self, session: &str) -> AppEvent {
        let call = self.call_mut(session).expect("a known call");
        let old = call.state.replace("established".into());
        AppEvent::CallStateChanged { session: session.to_string(), old, new: "established".into(), reason: None }
    }

    /// The call with id `session`, in whichever account holds it.
    pub fn call_mut(&mut self, session: &str) -> Option<&mut Call> {
        self.accounts.values_mut().find_map(|a| a.calls.get_mut(session))
    }

    /// The call with id `session`.
    pub fn call_of(&self, session: &str) -> Option<&Call> {
        self.accounts.values().find_map(|a| a.calls.get(session))
    }

    /// Reads one server message; returns what the application is told.
    pub fn read(&mut self, msg: &Value) -> Result<Vec<AppEvent>, String> {
        let Some(kind) = msg.get("sylkrtc").and_then(Value::as_str) else { return Ok(Vec::new()) };
        match kind {
            "event" if msg["event"] == "ready" => {
                self.ready = true;
                Ok(vec![AppEvent::Ready])
            }
            "account_event" => {
                let account = msg.get("account").and_then(Value::as_str).unwrap_or_default().to_string();
                let Some(acc) = self.accounts.get_mut(&account) else { return Ok(Vec::new()) };
                let event = msg.get("event").and_then(Value::as_str).unwrap_or_default();
                match event {
                    "registration_state" => {
                        let new = str_at(msg, &["data", "state"])?;
                        let reason = if new == "failed" { lenient(&msg["data"], "reason") } else { None };
                        let old = acc.registration_state.replace(new.clone());
                        Ok(vec![AppEvent::RegistrationStateChanged { account, old, new, reason }])
                    }
                    "incoming_session" => {
                        let session = msg.get("session").and_then(Value::as_str).unwrap_or_default().to_string();
                        let caller = msg
                            .get("data")
                            .and_then(|d| d.get("originator"))
                            .ok_or_else(|| "TypeError: `data.originator` is undefined".to_string())?;
                        let remote =
                            Identity { uri: lenient(caller, "uri"), display_name: lenient(caller, "display_name") };
                        let sdp = str_at(msg, &["data", "sdp"])?;
                        let call =
                            Call { direction: "incoming", state: Some("incoming".into()), remote: remote.clone() };
                        acc.calls.insert(session.clone(), call);
                        Ok(vec![AppEvent::IncomingCall { account, session, remote, sdp }])
                    }
                    "missed_session" => {
                        let caller = msg
                            .get("data")
                            .and_then(|d| d.get("originator"))
                            .ok_or_else(|| "TypeError: `data.originator` is undefined".to_string())?;
                        let originator =
                            Identity { uri: lenient(caller, "uri"), display_name: lenient(caller, "display_name") };
                        Ok(vec![AppEvent::MissedCall { account, originator }])
                    }
                    _ => Ok(Vec::new()),
                }
            }
            "session_event" => {
                let session = msg.get("session").and_then(Value::as_str).unwrap_or_default().to_string();
                let Some(call) = self.call_mut(&session) else { return Ok(Vec::new()) };
                if msg["event"] != "state" {
                    return Ok(Vec::new());
                }
                let new = str_at(msg, &["data", "state"])?;
                let old = call.state.replace(new.clone());
                let mut out = Vec::new();
                if new == "accepted" && call.direction == "outgoing" {
                    // `utils.mungeSdp(message.data.sdp)` parses it: undefined throws.
                    let sdp = str_at(msg, &["data", "sdp"]).map_err(|e| format!("mungeSdp: {e}"))?;
                    out.push(AppEvent::CallStateChanged { session: session.clone(), old, new, reason: None });
                    out.push(AppEvent::RemoteAnswer { session, sdp });
                } else if new == "established" && call.direction == "outgoing" {
                    // 0.9.6 keeps its own state (it fakes `established` itself).
                    call.state = old;
                } else {
                    let reason = (new == "terminated").then(|| lenient(&msg["data"], "reason")).flatten();
                    if new == "terminated" {
                        for acc in self.accounts.values_mut() {
                            acc.calls.remove(&session);
                        }
                    }
                    out.push(AppEvent::CallStateChanged { session, old, new, reason });
                }
                Ok(out)
            }
            "ack" | "error" => {
                let transaction = msg.get("transaction").and_then(Value::as_str).unwrap_or_default().to_string();
                if self.pending.remove(&transaction).is_none() {
                    return Ok(Vec::new());
                }
                let error =
                    (kind == "error").then(|| msg.get("error").map(|e| e.as_str().unwrap_or_default().to_string()));
                Ok(vec![AppEvent::Answer { transaction, error: error.flatten() }])
            }
            _ => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_originator_gives_an_undefined_caller() {
        let mut c = Client096::new();
        c.add_account("alice@example.com", "x", "Alice");
        let three_oh = json!({"sylkrtc":"account_event","account":"alice@example.com","session":"s","event":"incoming_session","data":{"originator":"bob@example.com","sdp":"v=0"}});
        let got = c.read(&three_oh).unwrap();
        assert!(matches!(&got[0], AppEvent::IncomingCall { remote, .. } if remote.uri.is_none()), "{got:?}");
        let four_one = json!({"sylkrtc":"account_event","account":"alice@example.com","session":"s2","event":"incoming_session","data":{"originator":{"uri":"bob@example.com","display_name":"Bob"},"sdp":"v=0"}});
        let got = c.read(&four_one).unwrap();
        let want = Identity { uri: Some("bob@example.com".into()), display_name: Some("Bob".into()) };
        assert!(matches!(&got[0], AppEvent::IncomingCall { remote, .. } if *remote == want), "{got:?}");
    }

    #[test]
    fn outgoing_accepted_without_sdp_throws() {
        let mut c = Client096::new();
        c.add_account("alice@example.com", "x", "Alice");
        c.call("alice@example.com", "s1", "bob@example.com", "v=0");
        let m = json!({"sylkrtc":"session_event","session":"s1","event":"state","data":{"state":"accepted"}});
        assert!(c.read(&m).unwrap_err().contains("mungeSdp"));
    }
}
