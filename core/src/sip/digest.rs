//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760): parsing
//! challenges and computing `Authorization` / `Proxy-Authorization` values.
//!
//! The secret is either the plain password or, as sylkRTC's `password` field carries it, the HA1
//! `H(username:realm:password)` in hex. An HA1 only answers challenges of the algorithm family it
//! was computed with (a 32-digit HA1 is MD5, a 64-digit one SHA-256); anything else is a
//! [`DigestError::Ha1Mismatch`].

use md5::Md5;
use sha2::{Digest as _, Sha256, Sha512_256};
use std::fmt;

/// Digest algorithms (RFC 7616 §3.3 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `MD5`, also assumed when `algorithm` is absent.
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-512-256`.
    Sha512_256,
    /// `SHA-512-256-sess`.
    Sha512_256Sess,
}

impl Algorithm {
    /// Parses an `algorithm` value, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "MD5" => Self::Md5,
            "MD5-SESS" => Self::Md5Sess,
            "SHA-256" => Self::Sha256,
            "SHA-256-SESS" => Self::Sha256Sess,
            "SHA-512-256" => Self::Sha512_256,
            "SHA-512-256-SESS" => Self::Sha512_256Sess,
            _ => return None,
        })
    }

    /// The RFC spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
            Self::Sha512_256 => "SHA-512-256",
            Self::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess | Self::Sha512_256Sess)
    }

    /// Length in hex digits of this algorithm's hashes.
    fn hex_len(self) -> usize {
        match self {
            Self::Md5 | Self::Md5Sess => 32,
            _ => 64,
        }
    }

    /// `H(data)` in lowercase hex.
    pub fn hash_hex(self, data: &[u8]) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => hex(&Md5::digest(data)),
            Self::Sha256 | Self::Sha256Sess => hex(&Sha256::digest(data)),
            Self::Sha512_256 | Self::Sha512_256Sess => hex(&Sha512_256::digest(data)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One `Digest` challenge from a `WWW-Authenticate` or `Proxy-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed unchanged.
    pub opaque: Option<String>,
    /// `algorithm` (MD5 when absent).
    pub algorithm: Algorithm,
    /// `qop` options offered (empty: RFC 2069 compatibility, no qop).
    pub qop: Vec<String>,
    /// `stale=true`: the nonce expired, the credentials are fine.
    pub stale: bool,
}

/// Why a challenge could not be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestError {
    /// Not a `Digest` challenge, or a required parameter is missing.
    Malformed(String),
    /// An algorithm we do not implement.
    UnsupportedAlgorithm(String),
    /// Only `qop` values we do not implement (e.g. only `auth-int`).
    UnsupportedQop(String),
    /// The secret is an HA1 of another hash family than the challenge's.
    Ha1Mismatch(Algorithm),
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(m) => write!(f, "malformed digest challenge: {m}"),
            Self::UnsupportedAlgorithm(a) => write!(f, "unsupported digest algorithm {a}"),
            Self::UnsupportedQop(q) => write!(f, "unsupported qop {q}"),
            Self::Ha1Mismatch(a) => write!(f, "the account's HA1 cannot answer a {} challenge", a.name()),
        }
    }
}

impl std::error::Error for DigestError {}

/// Splits `Digest k=v, k="v", …` into lower-cased keys and unquoted values.
fn parse_params(text: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let eq =
            rest.find('=').ok_or_else(|| DigestError::Malformed(format!("parameter without value in {text:?}")))?;
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let end = end.ok_or_else(|| DigestError::Malformed("unterminated quoted string".into()))?;
            value = v;
            rest = &q[end..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        if !key.is_empty() {
            out.push((key, value));
        }
    }
    Ok(out)
}

impl Challenge {
    /// Parses one header value. Unknown parameters are ignored.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let value = value.trim();
        let (scheme, params) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(DigestError::Malformed(format!("scheme {scheme} is not Digest")));
        }
        let params = parse_params(params)?;
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(&a).ok_or(DigestError::UnsupportedAlgorithm(a))?,
        };
        Ok(Self {
            realm: get("realm").ok_or_else(|| DigestError::Malformed("no realm".into()))?,
            nonce: get("nonce").ok_or_else(|| DigestError::Malformed("no nonce".into()))?,
            opaque: get("opaque"),
            algorithm,
            qop: get("qop")
                .map(|q| q.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// The first challenge among `values` that we can answer (RFC 8760 §2.4: servers list them
    /// by preference). Returns the last error if none fits.
    pub fn choose<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, DigestError> {
        let mut last = DigestError::Malformed("no challenge".into());
        for v in values {
            match Self::parse(v) {
                Ok(c) if c.qop.is_empty() || c.qop.iter().any(|q| q == "auth") => return Ok(c),
                Ok(c) => last = DigestError::UnsupportedQop(c.qop.join(",")),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The account's secret.
#[derive(Clone, Copy)]
pub enum Secret<'a> {
    /// The password itself.
    Password(&'a str),
    /// `H(username:realm:password)` in hex.
    Ha1(&'a str),
}

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Password(_) => "Password(<redacted>)",
            Self::Ha1(_) => "Ha1(<redacted>)",
        })
    }
}

impl<'a> Secret<'a> {
    /// sylkRTC's `password`: an HA1 when it is 32 or 64 hex digits, otherwise the password.
    pub fn from_sylkrtc(password: &'a str) -> Self {
        let hexlike = password.bytes().all(|b| b.is_ascii_hexdigit());
        if hexlike && (password.len() == 32 || password.len() == 64) {
            Self::Ha1(password)
        } else {
            Self::Password(password)
        }
    }
}

/// What a request needs to answer a challenge.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// `username`.
    pub username: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The Request-URI exactly as sent (RFC 3261 §22.4).
    pub uri: &'a str,
    /// A fresh client nonce (from the core's seeded RNG).
    pub cnonce: &'a str,
    /// How many times this nonce was used, this one included (1 for the first).
    pub nc: u32,
}

/// Computes the `Authorization` (or `Proxy-Authorization`) header value answering `c`.
pub fn authorize(c: &Challenge, secret: Secret<'_>, a: &Answer<'_>) -> Result<String, DigestError> {
    let alg = c.algorithm;
    let qop_auth = c.qop.iter().any(|q| q == "auth");
    if !c.qop.is_empty() && !qop_auth {
        return Err(DigestError::UnsupportedQop(c.qop.join(",")));
    }
    let mut ha1 = match secret {
        Secret::Password(p) => alg.hash_hex(format!("{}:{}:{p}", a.username, c.realm).as_bytes()),
        Secret::Ha1(h) if h.len() == alg.hex_len() => {
            // A SHA-512/256 HA1 and a SHA-256 HA1 are both 64 digits; trust the caller.
            h.to_ascii_lowercase()
        }
        Secret::Ha1(_) => return Err(DigestError::Ha1Mismatch(alg)),
    };
    // RFC 7616 §3.4.2: the -sess variants hash the nonces into HA1.
    if alg.is_sess() {
        ha1 = alg.hash_hex(format!("{ha1}:{}:{}", c.nonce, a.cnonce).as_bytes());
    }
    let ha2 = alg.hash_hex(format!("{}:{}", a.method, a.uri).as_bytes());
    let nc = format!("{:08x}", a.nc);
    let response = if qop_auth {
        alg.hash_hex(format!("{ha1}:{}:{nc}:{}:auth:{ha2}", c.nonce, a.cnonce).as_bytes())
    } else {
        alg.hash_hex(format!("{ha1}:{}:{ha2}", c.nonce).as_bytes())
    };
    let mut out = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\", algorithm={}",
        quote(a.username),
        quote(&c.realm),
        quote(&c.nonce),
        quote(a.uri),
        alg.name()
    );
    if qop_auth {
        out.push_str(&format!(", cnonce=\"{}\", qop=auth, nc={nc}", quote(a.cnonce)));
    }
    if let Some(o) = &c.opaque {
        out.push_str(&format!(", opaque=\"{}\"", quote(o)));
    }
    Ok(out)
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_of(header: &str) -> &str {
        let start = header.find("response=\"").unwrap() + 10;
        &header[start..start + header[start..].find('"').unwrap()]
    }

    /// RFC 2617 §3.5.
    #[test]
    fn rfc2617_example() {
        let c = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert_eq!(c.qop, ["auth", "auth-int"]);
        let a = Answer { username: "Mufasa", method: "GET", uri: "/dir/index.html", cnonce: "0a4f113b", nc: 1 };
        let h = authorize(&c, Secret::Password("Circle Of Life"), &a).unwrap();
        assert_eq!(response_of(&h), "6629fae49393a05397450978507c4ef1");
        assert!(h.contains("qop=auth, nc=00000001") && h.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#));
        // The same through the HA1.
        let ha1 = Algorithm::Md5.hash_hex(b"Mufasa:testrealm@host.com:Circle Of Life");
        let h2 = authorize(&c, Secret::Ha1(&ha1), &a).unwrap();
        assert_eq!(h, h2);
    }

    /// RFC 7616 §3.9.1, both algorithms.
    #[test]
    fn rfc7616_example() {
        let a = Answer {
            username: "Mufasa",
            method: "GET",
            uri: "/dir/index.html",
            cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            nc: 1,
        };
        for (alg, expected) in [
            ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ] {
            let c = Challenge::parse(&format!(
                r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
            ))
            .unwrap();
            let h = authorize(&c, Secret::Password("Circle of Life"), &a).unwrap();
            assert_eq!(response_of(&h), expected, "{alg}");
        }
    }

    #[test]
    fn sess_nc_and_kamailio_challenges() {
        let c =
            Challenge::parse(r#"Digest realm="example.test", nonce="abc", qop="auth", algorithm=MD5-sess"#).unwrap();
        let a = Answer { username: "alice", method: "REGISTER", uri: "sip:example.test", cnonce: "xyz", nc: 10 };
        let h = authorize(&c, Secret::Password("secret"), &a).unwrap();
        let ha1 = Algorithm::Md5.hash_hex(b"alice:example.test:secret");
        let ha1s = Algorithm::Md5.hash_hex(format!("{ha1}:abc:xyz").as_bytes());
        let ha2 = Algorithm::Md5.hash_hex(b"REGISTER:sip:example.test");
        let expect = Algorithm::Md5.hash_hex(format!("{ha1s}:abc:0000000a:xyz:auth:{ha2}").as_bytes());
        assert_eq!(response_of(&h), expect);
        assert!(h.contains("nc=0000000a") && h.contains("algorithm=MD5-sess"));
        let sha =
            Challenge::parse(r#"Digest realm="example.test", nonce="n", qop="auth", algorithm=sha-256, stale=TRUE"#)
                .unwrap();
        assert_eq!(sha.algorithm, Algorithm::Sha256);
        assert!(sha.stale);
        let md5_ha1 = Algorithm::Md5.hash_hex(b"alice:example.test:secret");
        assert_eq!(authorize(&sha, Secret::Ha1(&md5_ha1), &a), Err(DigestError::Ha1Mismatch(Algorithm::Sha256)));
    }

    #[test]
    fn no_qop_and_choice() {
        let c = Challenge::parse(r#"Digest realm="r", nonce="n""#).unwrap();
        let a = Answer { username: "u", method: "INVITE", uri: "sip:b@r", cnonce: "c", nc: 1 };
        let h = authorize(&c, Secret::Password("p"), &a).unwrap();
        assert!(!h.contains("qop") && !h.contains("cnonce"));
        let chosen = Challenge::choose([
            r#"Digest realm="r", nonce="1", algorithm=SHA-512, qop="auth""#,
            r#"Digest realm="r", nonce="2", qop="auth-int""#,
            r#"Digest realm="r", nonce="3", algorithm=SHA-256, qop="auth""#,
        ])
        .unwrap();
        assert_eq!(chosen.nonce, "3");
        assert!(matches!(Challenge::parse("Basic realm=\"x\""), Err(DigestError::Malformed(_))));
        assert!(matches!(Challenge::parse("Digest realm=\"x"), Err(DigestError::Malformed(_))));
        assert!(matches!(Secret::from_sylkrtc("b1726872c344b6dc8365b774f8fd6412"), Secret::Ha1(_)));
        assert!(matches!(Secret::from_sylkrtc("secret"), Secret::Password(_)));
    }
}
