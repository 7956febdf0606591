//! DNS as IO (architecture: the core decides, the runtime queries): the record types the core
//! asks for ([`QueryType`]), the typed answers a runtime gives back ([`Answer`]), and the cache
//! that keeps them for their TTLs ([`cache::DnsCache`]). RFC 3263 target selection over these
//! is `sip::rfc3263`.

pub mod cache;
pub mod line;

use std::fmt;
use std::net::IpAddr;

/// What the core asks the runtime to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QueryType {
    /// A and AAAA records (and the hosts file, as the system resolver does).
    Ip,
    /// SRV records (RFC 2782).
    Srv,
    /// NAPTR records (RFC 3403).
    Naptr,
}

impl QueryType {
    /// Name in captures and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Srv => "srv",
            Self::Naptr => "naptr",
        }
    }

    /// Inverse of [`QueryType::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Ip, Self::Srv, Self::Naptr].into_iter().find(|t| t.name() == s)
    }
}

impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Relative share among records of one priority.
    pub weight: u16,
    /// Port of the service.
    pub port: u16,
    /// Host name of the server, without the trailing dot (`.` alone: no service).
    pub target: String,
}

/// One NAPTR record (RFC 3403), as RFC 3263 §4.1 uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaptrRecord {
    /// Lower is tried first.
    pub order: u16,
    /// Lower is tried first among equal `order`.
    pub preference: u16,
    /// `S` for a record whose replacement is an SRV name.
    pub flags: String,
    /// `SIP+D2U`, `SIP+D2T`, `SIPS+D2T`…
    pub services: String,
    /// The SRV name to query next, without the trailing dot.
    pub replacement: String,
}

/// The records of one answer. An empty list is "no such name" or "no records of that type".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Records {
    /// Addresses (A and AAAA).
    Ip(Vec<IpAddr>),
    /// SRV records.
    Srv(Vec<SrvRecord>),
    /// NAPTR records.
    Naptr(Vec<NaptrRecord>),
}

impl Records {
    /// No records at all.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Ip(v) => v.is_empty(),
            Self::Srv(v) => v.is_empty(),
            Self::Naptr(v) => v.is_empty(),
        }
    }

    /// The query type these records answer.
    pub fn query_type(&self) -> QueryType {
        match self {
            Self::Ip(_) => QueryType::Ip,
            Self::Srv(_) => QueryType::Srv,
            Self::Naptr(_) => QueryType::Naptr,
        }
    }

    /// An empty answer of type `t`.
    pub fn empty(t: QueryType) -> Self {
        match t {
            QueryType::Ip => Self::Ip(Vec::new()),
            QueryType::Srv => Self::Srv(Vec::new()),
            QueryType::Naptr => Self::Naptr(Vec::new()),
        }
    }
}

/// A runtime's answer to one query: the records and how long they may be kept (the smallest TTL
/// among them, or the negative TTL for an empty answer; 0: do not keep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The records.
    pub records: Records,
    /// Seconds they may be cached.
    pub ttl: u32,
}

impl Answer {
    /// Addresses that must not be cached (what an answer without a TTL is taken as).
    pub fn ips(ips: Vec<IpAddr>) -> Self {
        Self { records: Records::Ip(ips), ttl: 0 }
    }
}
