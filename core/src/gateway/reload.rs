//! Reloading the configuration on SIGHUP: the options that can change while connections,
//! registrations and calls stay up.

use super::Gateway;
use crate::config::Config;

impl Gateway {
    /// Takes from `new` the options a reload changes: `web_origins`, `sip_domains` and the
    /// limits (`max_connections_per_ip`, `max_requests_per_second`, `max_accounts_per_connection`,
    /// `max_sessions_per_connection`, `max_http_header_size`, `http_handshake_timeout`). The rest
    /// of `new` is ignored (it needs a restart). Live connections, registrations and calls stay;
    /// new values apply to what comes next (a connection already over a lowered limit is kept).
    /// Returns the names of the options that changed.
    pub fn reload(&mut self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let c = &mut self.config;
        macro_rules! take {
            ($($field:ident),*) => {
                $(
                    if c.$field != new.$field {
                        c.$field = new.$field.clone();
                        changed.push(stringify!($field));
                    }
                )*
            };
        }
        take!(
            web_origins,
            sip_domains,
            max_connections_per_ip,
            max_requests_per_second,
            max_accounts_per_connection,
            max_sessions_per_connection,
            max_http_header_size,
            http_handshake_timeout
        );
        changed
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, Gateway};
    use std::time::Duration;

    #[test]
    fn only_the_reloadable_options_change() {
        let t0 = crate::time::test_epoch();
        let mut gw = Gateway::new(Config::default(), [5; 32], t0, Duration::from_secs(1_767_225_600)).unwrap();
        let new = Config {
            web_origins: vec!["https://a.example".into()],
            sip_domains: vec!["a.example".into()],
            max_connections_per_ip: 3,
            decline_code: 603,
            ..Config::default()
        };
        assert_eq!(gw.reload(&new), ["web_origins", "sip_domains", "max_connections_per_ip"]);
        assert_eq!(gw.config.web_origins, new.web_origins);
        assert_eq!(gw.config.max_connections_per_ip, 3);
        assert_eq!(gw.config.decline_code, 486, "not reloadable");
        assert!(gw.reload(&new).is_empty());
    }
}
