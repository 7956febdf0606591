//! Reloading the configuration on SIGHUP (`Input::Reload`): the options that can change while
//! connections, registrations and calls stay up.

use super::Gateway;
use crate::config::Config;

/// Applies `$field`s of `$new` that differ to `$config` (when `$apply`), collecting their names.
macro_rules! reloadable {
    ($config:expr, $new:expr, $apply:expr) => {{
        let mut changed: Vec<&'static str> = Vec::new();
        reloadable!(@each $config, $new, $apply, changed;
            web_origins,
            sip_domains,
            trusted_proxies,
            max_connections_per_ip,
            max_requests_per_second,
            max_accounts_per_connection,
            max_sessions_per_connection,
            max_http_header_size,
            http_handshake_timeout);
        changed
    }};
    (@each $config:expr, $new:expr, $apply:expr, $changed:ident; $($field:ident),*) => {
        $(
            if $config.$field != $new.$field {
                if $apply {
                    $config.$field = $new.$field.clone();
                }
                $changed.push(stringify!($field));
            }
        )*
    };
}

impl Gateway {
    /// Takes from `new` the options a reload changes: `web_origins`, `sip_domains`,
    /// `trusted_proxies` and the limits (`max_connections_per_ip`, `max_requests_per_second`,
    /// `max_accounts_per_connection`, `max_sessions_per_connection`, `max_http_header_size`,
    /// `http_handshake_timeout`). The rest of `new` is ignored (it needs a restart). Live
    /// connections, registrations and calls stay; new values apply to what comes next (a
    /// connection already over a lowered limit is kept, one accepted from a proxy no longer
    /// trusted keeps the client address it was given). Returns the names of the options that
    /// changed. The runtimes reach it through `Input::Reload`, which captures record.
    pub fn reload(&mut self, new: &Config) -> Vec<&'static str> {
        let changed = reloadable!(self.config, new, true);
        if !changed.is_empty() {
            log::info!("configuration reloaded: {}", changed.join(", "));
        }
        changed
    }

    /// The options [`Gateway::reload`] would change, without changing them.
    pub fn reload_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut current = self.config.clone();
        reloadable!(current, new, false)
    }
}

#[cfg(test)]
mod tests {
    use crate::http::forwarded::TrustedProxies;
    use crate::{Config, Gateway, Input};
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
        assert_eq!(gw.reload_changes(&new), ["web_origins", "sip_domains", "max_connections_per_ip"]);
        assert_eq!(gw.config.web_origins, Config::default().web_origins, "only looked");
        assert_eq!(gw.reload(&new), ["web_origins", "sip_domains", "max_connections_per_ip"]);
        assert_eq!(gw.config.web_origins, new.web_origins);
        assert_eq!(gw.config.max_connections_per_ip, 3);
        assert_eq!(gw.config.decline_code, 486, "not reloadable");
        assert!(gw.reload(&new).is_empty());
    }

    #[test]
    fn trusted_proxies_reload_through_the_input() {
        let t0 = crate::time::test_epoch();
        let mut gw = Gateway::new(Config::default(), [5; 32], t0, Duration::from_secs(1_767_225_600)).unwrap();
        let new = Config { trusted_proxies: TrustedProxies::parse("10.0.0.0/8").unwrap(), ..Config::default() };
        assert_eq!(gw.reload_changes(&new), ["trusted_proxies"]);
        gw.handle_input(t0, Input::Reload { config: &new });
        assert!(gw.config.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(gw.reload_changes(&new).is_empty());
    }
}
