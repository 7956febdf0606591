//! Accounts a connection added: the SIP identity and credentials a browser hands the gateway.
//! Accounts belong to their WebSocket connection and die with it (spec §1.7).

use std::fmt;

/// Push-notification parameters from `account-devicetoken`, put in the REGISTER Contact as
/// `pn-*` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushParams {
    /// `pn-tok`.
    pub token: String,
    /// `pn-type`.
    pub platform: String,
    /// `pn-device`.
    pub device: String,
    /// `pn-silent` (`1`/`0`).
    pub silent: bool,
    /// `pn-app`.
    pub app: String,
}

/// One added account.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// Bare AOR, `user@domain`.
    pub aor: String,
    /// HA1 `md5(user:realm:password)` as sent by the client. A secret: never logged.
    pub password: String,
    /// For From headers.
    pub display_name: Option<String>,
    /// For User-Agent headers.
    pub user_agent: Option<String>,
    /// Incoming INVITE headers with these prefixes are passed to the client.
    pub incoming_header_prefixes: Vec<String>,
    /// Set by `account-devicetoken`.
    pub push: Option<PushParams>,
    /// The SIP registration, while `account-register` is in effect.
    pub registration: Option<crate::sip::stack::RegId>,
    /// A registration of it succeeded once on this connection (SylkServer's `auth_state`): the
    /// addressbook and messaging requests are refused (`Account not authenticated`) until then.
    pub authenticated: bool,
}

impl Account {
    /// The part of the AOR after `@` (empty when there is none), as SylkServer takes it.
    pub fn domain(&self) -> &str {
        domain_of(&self.aor)
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("aor", &self.aor)
            .field("password", &"<redacted>")
            .field("display_name", &self.display_name)
            .field("user_agent", &self.user_agent)
            .field("incoming_header_prefixes", &self.incoming_header_prefixes)
            .field("push", &self.push)
            .field("registration", &self.registration)
            .field("authenticated", &self.authenticated)
            .finish()
    }
}

/// The domain of an AOR: what follows `@`, without port or parameters.
pub fn domain_of(aor: &str) -> &str {
    let after = aor.split_once('@').map_or("", |(_, d)| d);
    let end = after.find([';', '?']).unwrap_or(after.len());
    let hostport = &after[..end];
    if hostport.starts_with('[') {
        return hostport.split_once(']').map_or(hostport, |(h, _)| &hostport[..=h.len()]);
    }
    hostport.split(':').next().unwrap_or(hostport)
}

/// `sip_domains` check: `*` allows all; otherwise the domain must be listed (case-insensitive).
pub fn domain_allowed(domain: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|d| d == "*" || d.eq_ignore_ascii_case(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert_eq!(domain_of("alice@example.com"), "example.com");
        assert_eq!(domain_of("alice@example.com:5070;transport=tcp"), "example.com");
        assert_eq!(domain_of("alice@[2001:db8::1]:5060"), "[2001:db8::1]");
        assert_eq!(domain_of("example.com"), "");
        assert!(domain_allowed("Example.COM", &["example.com".into()]));
        assert!(!domain_allowed("evil.test", &["example.com".into()]));
        assert!(domain_allowed("x", &["*".into()]));
    }
}
