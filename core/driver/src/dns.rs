//! One DNS query for the core's `Output::Resolve` (the RFC 3263 logic, the order of queries and
//! the cache are the core's): hickory-resolver, configured from `/etc/resolv.conf` (and
//! `/etc/hosts` for addresses, as `getaddrinfo` would). "No such name" and "no records of that
//! type" are an empty answer; anything else (timeout, refused, bad name) is the error text.
//! Both runtimes run [`lookup`] off their event loop: the mio one on its bounded pool, each
//! thread with its own current-thread tokio runtime; the tokio one as a task.

use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use sylkgw_core::dns::cache::NEGATIVE_TTL;
use sylkgw_core::dns::{Answer, NaptrRecord, QueryType, Records, SrvRecord};

/// The resolver of the system configuration; hickory's own cache is off (the core caches).
/// Built inside a tokio runtime.
pub fn system_resolver() -> Result<TokioResolver, String> {
    let mut builder = Resolver::builder_tokio().map_err(|e| format!("reading /etc/resolv.conf: {e}"))?;
    builder.options_mut().cache_size = 0;
    builder.build().map_err(|e| format!("DNS resolver: {e}"))
}

/// Looks `name` up for `qtype` records.
pub async fn lookup(resolver: &TokioResolver, qtype: QueryType, name: &str) -> Result<Answer, String> {
    // Names from the core are fully qualified: no search domains.
    let fqdn = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    let result = match qtype {
        QueryType::Ip => resolver.lookup_ip(fqdn.as_str()).await.map(|l| {
            let ttl = l.as_lookup().answers().iter().map(|r| r.ttl).min().unwrap_or(0);
            Answer { records: Records::Ip(l.iter().collect()), ttl }
        }),
        QueryType::Srv | QueryType::Naptr => {
            let rtype = if qtype == QueryType::Srv { RecordType::SRV } else { RecordType::NAPTR };
            resolver.lookup(fqdn.as_str(), rtype).await.map(|l| {
                let ttl = l.answers().iter().map(|r| r.ttl).min().unwrap_or(0);
                let records = match qtype {
                    QueryType::Srv => Records::Srv(
                        l.answers()
                            .iter()
                            .filter_map(|r| match &r.data {
                                RData::SRV(s) => Some(SrvRecord {
                                    priority: s.priority,
                                    weight: s.weight,
                                    port: s.port,
                                    target: bare(&s.target.to_ascii()),
                                }),
                                _ => None,
                            })
                            .collect(),
                    ),
                    _ => Records::Naptr(
                        l.answers()
                            .iter()
                            .filter_map(|r| match &r.data {
                                RData::NAPTR(n) => Some(NaptrRecord {
                                    order: n.order,
                                    preference: n.preference,
                                    flags: String::from_utf8_lossy(&n.flags).into_owned(),
                                    services: String::from_utf8_lossy(&n.services).into_owned(),
                                    replacement: bare(&n.replacement.to_ascii()),
                                }),
                                _ => None,
                            })
                            .collect(),
                    ),
                };
                Answer { records, ttl }
            })
        }
    };
    match result {
        Ok(answer) => Ok(answer),
        Err(e) if e.is_no_records_found() => Ok(Answer { records: Records::empty(qtype), ttl: NEGATIVE_TTL }),
        Err(e) => Err(e.to_string()),
    }
}

/// A name without its trailing dot (`.` alone stays: "no service", RFC 2782).
fn bare(name: &str) -> String {
    match name.strip_suffix('.') {
        Some("") | None => name.to_string(),
        Some(n) => n.to_string(),
    }
}
