//! How a DNS answer reads in a capture's `resolved` line (one JSON value):
//! `"error text"`, or `{"ttl":300,"ip":["192.0.2.7"]}`, `{"ttl":300,"srv":[[priority, weight,
//! port, "target"]]}`, `{"ttl":300,"naptr":[[order, preference, "flags", "services",
//! "replacement"]]}`. The older form, a bare list of addresses, reads as addresses with TTL 0.

use super::{Answer, NaptrRecord, Records, SrvRecord};
use serde_json::{json, Value};

/// The JSON text of `result`.
pub fn encode(result: &Result<Answer, String>) -> String {
    let answer = match result {
        Ok(a) => a,
        Err(e) => return Value::from(e.as_str()).to_string(),
    };
    let (key, list): (&str, Vec<Value>) = match &answer.records {
        Records::Ip(ips) => ("ip", ips.iter().map(|ip| json!(ip.to_string())).collect()),
        Records::Srv(l) => ("srv", l.iter().map(|r| json!([r.priority, r.weight, r.port, r.target])).collect()),
        Records::Naptr(l) => {
            ("naptr", l.iter().map(|r| json!([r.order, r.preference, r.flags, r.services, r.replacement])).collect())
        }
    };
    let mut obj = serde_json::Map::new();
    obj.insert("ttl".into(), json!(answer.ttl));
    obj.insert(key.into(), Value::Array(list));
    Value::Object(obj).to_string()
}

/// Reads what [`encode`] wrote; `Err` names what is wrong.
pub fn decode(text: &str) -> Result<Result<Answer, String>, &'static str> {
    let bad = "bad resolved payload";
    let value: Value = serde_json::from_str(text).map_err(|_| bad)?;
    match value {
        Value::String(e) => Ok(Err(e)),
        Value::Array(ips) => Ok(Ok(Answer { records: Records::Ip(addresses(&ips)?), ttl: 0 })),
        Value::Object(obj) => {
            let ttl = obj.get("ttl").and_then(Value::as_u64).and_then(|t| u32::try_from(t).ok()).ok_or(bad)?;
            let records = if let Some(Value::Array(l)) = obj.get("ip") {
                Records::Ip(addresses(l)?)
            } else if let Some(Value::Array(l)) = obj.get("srv") {
                Records::Srv(l.iter().map(srv).collect::<Option<_>>().ok_or("bad srv record")?)
            } else if let Some(Value::Array(l)) = obj.get("naptr") {
                Records::Naptr(l.iter().map(naptr).collect::<Option<_>>().ok_or("bad naptr record")?)
            } else {
                return Err(bad);
            };
            Ok(Ok(Answer { records, ttl }))
        }
        _ => Err(bad),
    }
}

fn addresses(list: &[Value]) -> Result<Vec<std::net::IpAddr>, &'static str> {
    list.iter().map(|ip| ip.as_str().and_then(|s| s.parse().ok()).ok_or("bad address")).collect()
}

fn u16_at(v: &[Value], i: usize) -> Option<u16> {
    v.get(i)?.as_u64().and_then(|n| u16::try_from(n).ok())
}

fn str_at(v: &[Value], i: usize) -> Option<String> {
    v.get(i)?.as_str().map(String::from)
}

fn srv(v: &Value) -> Option<SrvRecord> {
    let v = v.as_array()?;
    Some(SrvRecord { priority: u16_at(v, 0)?, weight: u16_at(v, 1)?, port: u16_at(v, 2)?, target: str_at(v, 3)? })
}

fn naptr(v: &Value) -> Option<NaptrRecord> {
    let v = v.as_array()?;
    Some(NaptrRecord {
        order: u16_at(v, 0)?,
        preference: u16_at(v, 1)?,
        flags: str_at(v, 2)?,
        services: str_at(v, 3)?,
        replacement: str_at(v, 4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_round_trips_and_the_old_list_still_reads() {
        let answers = [
            Err("timed out".to_string()),
            Ok(Answer {
                records: Records::Ip(vec!["192.0.2.7".parse().unwrap(), "2001:db8::1".parse().unwrap()]),
                ttl: 60,
            }),
            Ok(Answer {
                records: Records::Srv(vec![SrvRecord {
                    priority: 10,
                    weight: 5,
                    port: 5060,
                    target: "a.example".into(),
                }]),
                ttl: 300,
            }),
            Ok(Answer {
                records: Records::Naptr(vec![NaptrRecord {
                    order: 10,
                    preference: 20,
                    flags: "S".into(),
                    services: "SIP+D2U".into(),
                    replacement: "_sip._udp.example".into(),
                }]),
                ttl: 30,
            }),
            Ok(Answer { records: Records::Srv(Vec::new()), ttl: 30 }),
        ];
        for a in answers {
            assert_eq!(decode(&encode(&a)), Ok(a.clone()), "{}", encode(&a));
        }
        assert_eq!(decode(r#"["192.0.2.7"]"#), Ok(Ok(Answer::ips(vec!["192.0.2.7".parse().unwrap()]))));
        for bad in [
            "",
            "3",
            r#"{"ttl":1}"#,
            r#"{"ip":[]}"#,
            r#"{"ttl":1,"srv":[[1,2,3]]}"#,
            r#"["nope"]"#,
            r#"{"ttl":1,"srv":[[1,2,70000,"a"]]}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
