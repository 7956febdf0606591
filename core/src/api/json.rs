//! A writer of one-line JSON objects with keys in the order written (serde_json's `Map` would
//! sort them), so events read the way SylkServer's do: `{"sylkrtc": …}` first.

use serde_json::Value;

/// Builds `{"k": v, …}` in insertion order.
pub struct JsonObject {
    buf: String,
}

impl JsonObject {
    /// `{"sylkrtc": kind`.
    pub fn sylkrtc(kind: &str) -> Self {
        let mut o = Self { buf: String::with_capacity(64) };
        o.buf.push('{');
        o.str("sylkrtc", kind)
    }

    /// An empty object.
    pub fn new() -> Self {
        Self { buf: String::from("{") }
    }

    fn key(&mut self, k: &str) {
        if self.buf.len() > 1 {
            self.buf.push(',');
        }
        push_json_str(&mut self.buf, k);
        self.buf.push(':');
    }

    /// A string member.
    pub fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        push_json_str(&mut self.buf, v);
        self
    }

    /// A string member, `null` when `None`.
    pub fn opt_str(mut self, k: &str, v: Option<&str>) -> Self {
        self.key(k);
        match v {
            Some(v) => push_json_str(&mut self.buf, v),
            None => self.buf.push_str("null"),
        }
        self
    }

    /// A number member.
    pub fn num(mut self, k: &str, v: i64) -> Self {
        self.key(k);
        self.buf.push_str(&v.to_string());
        self
    }

    /// A boolean member.
    pub fn boolean(mut self, k: &str, v: bool) -> Self {
        self.key(k);
        self.buf.push_str(if v { "true" } else { "false" });
        self
    }

    /// A member whose value is already JSON text (an array).
    pub fn raw(mut self, k: &str, json: &str) -> Self {
        self.key(k);
        self.buf.push_str(json);
        self
    }

    /// A nested object member.
    pub fn obj(mut self, k: &str, v: JsonObject) -> Self {
        self.key(k);
        self.buf.push_str(&v.finish());
        self
    }

    /// Any JSON value as a member.
    pub fn value(mut self, k: &str, v: &Value) -> Self {
        self.key(k);
        self.buf.push_str(&v.to_string());
        self
    }

    /// `{name: value, …}` from pairs (the `headers` object of events).
    pub fn pairs(mut self, k: &str, pairs: &[(String, String)]) -> Self {
        let mut inner = JsonObject::new();
        for (name, value) in pairs {
            inner = inner.str(name, value);
        }
        self.key(k);
        self.buf.push_str(&inner.finish());
        self
    }

    /// Closes the object.
    pub fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

fn push_json_str(buf: &mut String, s: &str) {
    // serde_json's string escaping cannot fail for a `str`.
    buf.push_str(&Value::from(s).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_and_escaped() {
        let s = JsonObject::sylkrtc("x").str("a\"", "b\n").opt_str("n", None).num("c", 3).finish();
        assert_eq!(s, r#"{"sylkrtc":"x","a\"":"b\n","n":null,"c":3}"#);
    }
}
