//! Who the stack acts for: the account of a registration or a call, and the push parameters of
//! a registration's Contact (RFC 8599).

use super::uri::write_quoted;

/// Push parameters for the Contact (RFC 8599).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushContact {
    /// `pn-app`.
    pub app: String,
    /// `pn-tok`.
    pub token: String,
    /// `pn-type`.
    pub platform: String,
    /// `pn-device`.
    pub device: String,
    /// `pn-silent`.
    pub silent: bool,
}

/// The account a registration or a call acts for.
#[derive(Clone)]
pub struct SipIdentity {
    /// `user@domain` (no scheme).
    pub aor: String,
    /// The account's password or HA1 (sylkRTC's `password`).
    pub secret: String,
    /// For From.
    pub display_name: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// Our Contact's user part, unique per account and connection.
    pub contact_user: String,
}

impl SipIdentity {
    /// Our From value with `tag`: `"Display" <sip:aor>;tag=…`, the display name a quoted
    /// string (RFC 3261 §25.1: `"` and `\` escaped, CR/LF replaced), so no name can end it.
    pub(super) fn tagged_from(&self, tag: &str) -> String {
        let mut from = String::new();
        if let Some(d) = &self.display_name {
            // Writing to a String cannot fail.
            let _ = write_quoted(&mut from, d);
            from.push(' ');
        }
        from.push_str(&format!("<sip:{}>;tag={tag}", self.aor));
        from
    }

    /// The user part of the AoR: the digest username.
    pub(super) fn username(&self) -> &str {
        self.aor.split_once('@').map_or(self.aor.as_str(), |(u, _)| u)
    }

    /// The domain of the AoR.
    pub(super) fn domain(&self) -> &str {
        self.aor.split_once('@').map_or(self.aor.as_str(), |(_, d)| d)
    }
}

impl std::fmt::Debug for SipIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("SipIdentity")
            .field("aor", &self.aor)
            .field("contact_user", &self.contact_user)
            .finish_non_exhaustive()
    }
}

/// Who registers, and how.
#[derive(Clone, Debug)]
pub struct RegParams {
    /// The account.
    pub identity: SipIdentity,
    /// Push parameters.
    pub push: Option<PushContact>,
}
