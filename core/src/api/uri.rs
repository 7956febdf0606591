//! The AOR check SylkServer applies to `account`, `uri` and `contact` fields: strip a leading
//! `sip:`/`sips:`, then the rest must parse as the body of a `sip:` URI (RFC 3261 §19.1).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Normalises an AOR as SylkServer's `AORValidator` does: returns the value without its
/// `sip:`/`sips:` scheme, or `None` if it is not a valid SIP URI body.
pub fn normalize_aor(value: &str) -> Option<String> {
    let body = match value.split_once(':') {
        Some((scheme, rest)) if scheme == "sip" || scheme == "sips" => rest,
        _ => value,
    };
    valid_sip_uri_body(body).then(|| body.to_string())
}

/// `[userinfo@]host[:port][;params][?headers]`.
fn valid_sip_uri_body(body: &str) -> bool {
    if body.is_empty() || body.chars().any(|c| c.is_whitespace() || c.is_control() || "<>\"".contains(c)) {
        return false;
    }
    // Parameters and headers follow the host part; the user part may itself contain ';' or '?',
    // so find the host part after the last '@' first.
    let (user, rest) = match body.rfind('@') {
        Some(at) => (Some(&body[..at]), &body[at + 1..]),
        None => (None, body),
    };
    if let Some(user) = user {
        let name = user.split(':').next().unwrap_or_default();
        if name.is_empty() {
            return false;
        }
    }
    let hostport = rest.split([';', '?']).next().unwrap_or_default();
    valid_hostport(hostport)
}

fn valid_hostport(hp: &str) -> bool {
    let (host, port) = if let Some(v6) = hp.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else { return false };
        if addr.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("v6", Some(port)),
                None => return false,
            },
        }
    } else {
        match hp.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        if port.parse::<u32>().map_or(true, |p| p == 0 || p > 65535) {
            return false;
        }
    }
    host == "v6" || host.parse::<Ipv4Addr>().is_ok() || valid_hostname(host)
}

/// RFC 3261 `hostname`: dot-separated labels of alphanumerics and inner hyphens, optional
/// trailing dot.
fn valid_hostname(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_sylkserver_accepts() {
        assert_eq!(normalize_aor("alice@example.com").as_deref(), Some("alice@example.com"));
        assert_eq!(normalize_aor("sip:alice@example.com").as_deref(), Some("alice@example.com"));
        assert_eq!(normalize_aor("sips:bob@example.com:5061").as_deref(), Some("bob@example.com:5061"));
        assert_eq!(normalize_aor("example.com").as_deref(), Some("example.com"));
        assert!(normalize_aor("+31123@[2001:db8::1]:5060;user=phone").is_some());
        assert!(normalize_aor("a;b@10.0.0.1").is_some());
    }

    #[test]
    fn rejects_garbage() {
        for bad in
            ["", "alice@", "@example.com", "alice@exa mple.com", "alice@host:99999", "a@[::1", "a@-x.com", "a@x..com"]
        {
            assert_eq!(normalize_aor(bad), None, "{bad}");
        }
    }
}
