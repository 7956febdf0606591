//! The REGISTER client of one binding (RFC 3261 §10.2): registering, refreshing before expiry,
//! answering digest challenges, honouring 423, backing off after failures, and unregistering
//! with `Expires: 0`. A pure machine: it decides what to send and when; the SIP stack builds the
//! requests and reports the responses.

use crate::sip::digest::Challenge;
use std::time::{Duration, Instant};

/// What the transaction user hears about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegState {
    /// A REGISTER is on its way and no binding is confirmed.
    Registering,
    /// The registrar confirmed the binding.
    Registered,
    /// The last attempt failed with `"<code> <phrase>"`.
    Failed(String),
    /// Unregistered (after `Expires: 0`, or stopped before registering).
    Unregistered,
}

/// A REGISTER the stack must send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRegister {
    /// `Expires` (and the Contact's `expires`); 0 unregisters.
    pub expires: u32,
    /// Answer this challenge; `(challenge, proxy, nc)`, `proxy` meaning Proxy-Authorization.
    pub auth: Option<(Challenge, bool, u32)>,
}

/// A response to our REGISTER, as the stack read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegResponse {
    /// Status code (408 for a transaction timeout or transport failure).
    pub code: u16,
    /// Reason phrase.
    pub reason: String,
    /// For 2xx: the `expires` of our own binding in the Contact list, else the `Expires` header.
    pub granted: Option<u32>,
    /// For 401/407: `WWW-Authenticate` / `Proxy-Authenticate` values, in order.
    pub challenges: Vec<String>,
    /// For 423: `Min-Expires`.
    pub min_expires: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    /// REGISTER with expires > 0 in flight.
    Registering,
    Registered,
    /// Waiting for a retry after a failure.
    Backoff,
    /// REGISTER with expires 0 in flight.
    Unregistering,
    /// Gave up (bad credentials, 403, …) until started again.
    Stopped,
}

/// Back-off after failures (RFC 5626 §4.5 flavour): `min(max, base · 2^failures)`; the base
/// is `register_retry_interval` (default [`BACKOFF_BASE`]).
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(1800);

/// One registration binding.
#[derive(Debug, Clone)]
pub struct Registration {
    desired: u32,
    phase: Phase,
    state: RegState,
    /// The challenge we answered in the request in flight (its nonce, to spot a repeated 401).
    answered: Option<String>,
    /// The nonce last used and how often (`nc`).
    nonce_uses: Option<(String, u32)>,
    failures: u32,
    /// Refresh (Registered) or retry (Backoff).
    wakeup: Option<Instant>,
    /// A 423 raised the interval; keep it for refreshes.
    floor: u32,
    /// The first retry's wait after a failure; doubles per failure up to `BACKOFF_MAX`.
    backoff_base: Duration,
}

impl Registration {
    /// A binding that wants `expires` seconds.
    pub fn new(expires: u32) -> Self {
        Self {
            desired: expires.max(1),
            phase: Phase::Idle,
            state: RegState::Unregistered,
            answered: None,
            nonce_uses: None,
            failures: 0,
            wakeup: None,
            floor: 0,
            backoff_base: BACKOFF_BASE,
        }
    }

    /// The same binding retrying after `base` (at least 1 s) instead of [`BACKOFF_BASE`].
    pub fn with_backoff_base(mut self, base: Duration) -> Self {
        self.backoff_base = base.max(Duration::from_secs(1));
        self
    }

    /// The state the TU last heard.
    pub fn state(&self) -> &RegState {
        &self.state
    }

    /// When [`Registration::on_timeout`] should run.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.wakeup
    }

    /// True while a REGISTER of ours is in flight.
    pub fn in_flight(&self) -> bool {
        matches!(self.phase, Phase::Registering | Phase::Unregistering)
    }

    /// True while an un-REGISTER (`Expires: 0`) of ours is in flight.
    pub fn unregistering(&self) -> bool {
        matches!(self.phase, Phase::Unregistering)
    }

    /// True when nothing more will happen (unregistered or given up).
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Idle | Phase::Stopped) && self.wakeup.is_none()
    }

    /// Starts (or restarts) registering. Returns the REGISTER to send and pushes state changes.
    pub fn start(&mut self, changes: &mut Vec<RegState>) -> SendRegister {
        self.failures = 0;
        self.begin(changes)
    }

    fn begin(&mut self, changes: &mut Vec<RegState>) -> SendRegister {
        self.phase = Phase::Registering;
        self.answered = None;
        self.wakeup = None;
        self.set_state(RegState::Registering, changes);
        SendRegister { expires: self.desired.max(self.floor), auth: None }
    }

    /// Unregisters: `Some(REGISTER with Expires: 0)` if a binding may exist at the registrar.
    pub fn stop(&mut self) -> Option<SendRegister> {
        self.wakeup = None;
        self.answered = None;
        let may_be_bound = matches!(self.phase, Phase::Registering | Phase::Registered | Phase::Unregistering);
        if may_be_bound || self.state == RegState::Registered {
            self.phase = Phase::Unregistering;
            Some(SendRegister { expires: 0, auth: None })
        } else {
            self.phase = Phase::Idle;
            None
        }
    }

    /// A response (or a timeout reported as 408) to the REGISTER in flight.
    pub fn on_response(
        &mut self,
        resp: &RegResponse,
        now: Instant,
        changes: &mut Vec<RegState>,
    ) -> Option<SendRegister> {
        let unregistering = self.phase == Phase::Unregistering;
        if !self.in_flight() {
            return None;
        }
        let expires = if unregistering { 0 } else { self.desired.max(self.floor) };
        match resp.code {
            100..=199 => None,
            200..=299 if unregistering => {
                self.phase = Phase::Idle;
                self.set_state(RegState::Unregistered, changes);
                None
            }
            200..=299 => {
                let granted = resp.granted.unwrap_or(expires);
                if granted == 0 {
                    // The registrar removed our binding although we asked to keep it.
                    self.fail(resp, now, changes, true);
                    return None;
                }
                self.phase = Phase::Registered;
                self.failures = 0;
                self.answered = None;
                // Refresh ahead of expiry: half-way for short intervals, 30 s early otherwise.
                let refresh = (granted / 2).max(granted.saturating_sub(30)).max(1);
                self.wakeup = Some(now + Duration::from_secs(u64::from(refresh)));
                self.set_state(RegState::Registered, changes);
                None
            }
            401 | 407 => {
                let proxy = resp.code == 407;
                let challenge = match Challenge::choose(resp.challenges.iter().map(String::as_str)) {
                    Ok(c) => c,
                    Err(e) => {
                        log::info!("cannot answer the registrar's challenge: {e}");
                        self.fail(resp, now, changes, false);
                        return None;
                    }
                };
                // §22.2: a second challenge for credentials we already sent means they are
                // wrong, unless the nonce merely went stale.
                if self.answered.is_some() && !challenge.stale {
                    self.fail(resp, now, changes, false);
                    return None;
                }
                let nc = match &self.nonce_uses {
                    Some((n, count)) if *n == challenge.nonce => count + 1,
                    _ => 1,
                };
                self.nonce_uses = Some((challenge.nonce.clone(), nc));
                self.answered = Some(challenge.nonce.clone());
                Some(SendRegister { expires, auth: Some((challenge, proxy, nc)) })
            }
            423 if !unregistering => {
                // §10.2.8: retry with at least Min-Expires.
                match resp.min_expires {
                    Some(min) if min > expires => {
                        self.floor = min;
                        self.answered = None;
                        Some(SendRegister { expires: min, auth: None })
                    }
                    _ => {
                        self.fail(resp, now, changes, true);
                        None
                    }
                }
            }
            _ if unregistering => {
                self.phase = Phase::Idle;
                self.set_state(RegState::Unregistered, changes);
                None
            }
            // 403 and other definite refusals: no retry until the user asks again.
            403 | 404 | 420 | 484 => {
                self.fail(resp, now, changes, false);
                None
            }
            _ => {
                self.fail(resp, now, changes, true);
                None
            }
        }
    }

    /// Runs a due refresh or retry.
    pub fn on_timeout(&mut self, now: Instant, changes: &mut Vec<RegState>) -> Option<SendRegister> {
        if self.wakeup.is_none_or(|t| t > now) {
            return None;
        }
        self.wakeup = None;
        match self.phase {
            Phase::Registered => {
                // A refresh keeps the state `registered` unless it fails.
                self.phase = Phase::Registering;
                self.answered = None;
                Some(SendRegister { expires: self.desired.max(self.floor), auth: None })
            }
            Phase::Backoff => Some(self.begin(changes)),
            _ => None,
        }
    }

    fn fail(&mut self, resp: &RegResponse, now: Instant, changes: &mut Vec<RegState>, retry: bool) {
        self.answered = None;
        self.set_state(RegState::Failed(format!("{} {}", resp.code, resp.reason)), changes);
        if retry {
            self.failures = self.failures.saturating_add(1);
            let exp = self.failures.saturating_sub(1).min(10);
            let wait = (self.backoff_base * 2u32.pow(exp)).min(BACKOFF_MAX);
            self.phase = Phase::Backoff;
            self.wakeup = Some(now + wait);
        } else {
            self.phase = Phase::Stopped;
            self.wakeup = None;
        }
    }

    fn set_state(&mut self, s: RegState, changes: &mut Vec<RegState>) {
        if self.state != s {
            self.state = s.clone();
            changes.push(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(code: u16, reason: &str) -> RegResponse {
        RegResponse { code, reason: reason.into(), ..RegResponse::default() }
    }

    const CH: &str = r#"Digest realm="example.test", nonce="n1", qop="auth", algorithm=MD5"#;

    #[test]
    fn register_then_refresh_before_expiry() {
        let t0 = crate::time::test_epoch();
        let mut r = Registration::new(600);
        let mut ch = Vec::new();
        assert_eq!(r.start(&mut ch), SendRegister { expires: 600, auth: None });
        assert_eq!(ch, [RegState::Registering]);
        let ok = RegResponse { granted: Some(300), ..resp(200, "OK") };
        assert_eq!(r.on_response(&ok, t0, &mut ch), None);
        assert_eq!(ch.last(), Some(&RegState::Registered));
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(270)), "30 s before the granted 300 s");
        let refresh = r.on_timeout(t0 + Duration::from_secs(270), &mut ch).unwrap();
        assert_eq!(refresh.expires, 600);
        assert_eq!(ch.len(), 2, "a refresh does not announce `registering` again");
        r.on_response(&ok, t0 + Duration::from_secs(271), &mut ch);
        assert_eq!(ch.len(), 2);
    }

    #[test]
    fn challenge_answered_once_then_wrong_password_fails_without_retry() {
        let t0 = crate::time::test_epoch();
        let mut r = Registration::new(600);
        let mut ch = Vec::new();
        r.start(&mut ch);
        let c401 = RegResponse { challenges: vec![CH.into()], ..resp(401, "Unauthorized") };
        let again = r.on_response(&c401, t0, &mut ch).unwrap();
        let (challenge, proxy, nc) = again.auth.unwrap();
        assert_eq!((challenge.nonce.as_str(), proxy, nc), ("n1", false, 1));
        assert_eq!(r.on_response(&c401, t0, &mut ch), None);
        assert_eq!(ch.last(), Some(&RegState::Failed("401 Unauthorized".into())));
        assert!(r.is_done(), "no retry storm on bad credentials");
    }

    #[test]
    fn stale_nonce_is_retried_and_nc_counts_per_nonce() {
        let t0 = crate::time::test_epoch();
        let mut r = Registration::new(600);
        let mut ch = Vec::new();
        r.start(&mut ch);
        let c407 = RegResponse { challenges: vec![CH.into()], ..resp(407, "Proxy Authentication Required") };
        let s1 = r.on_response(&c407, t0, &mut ch).unwrap();
        assert!(s1.auth.as_ref().unwrap().1, "407 answers with Proxy-Authorization");
        let stale = RegResponse { challenges: vec![format!("{CH}, stale=true")], ..resp(401, "Unauthorized") };
        let s2 = r.on_response(&stale, t0, &mut ch).unwrap();
        assert_eq!(s2.auth.unwrap().2, 2, "same nonce, nc 2");
        assert_eq!(ch, [RegState::Registering]);
    }

    #[test]
    fn interval_too_brief_uses_min_expires() {
        let t0 = crate::time::test_epoch();
        let mut r = Registration::new(60);
        let mut ch = Vec::new();
        r.start(&mut ch);
        let r423 = RegResponse { min_expires: Some(3600), ..resp(423, "Interval Too Brief") };
        assert_eq!(r.on_response(&r423, t0, &mut ch), Some(SendRegister { expires: 3600, auth: None }));
        r.on_response(&RegResponse { granted: Some(3600), ..resp(200, "OK") }, t0, &mut ch);
        let refresh = r.on_timeout(t0 + Duration::from_secs(3570), &mut ch).unwrap();
        assert_eq!(refresh.expires, 3600, "the floor stays for refreshes");
    }

    #[test]
    fn timeout_fails_then_backs_off_and_recovers() {
        let t0 = crate::time::test_epoch();
        let mut r = Registration::new(600);
        let mut ch = Vec::new();
        r.start(&mut ch);
        r.on_response(&resp(408, "Request Timeout"), t0, &mut ch);
        assert_eq!(ch.last(), Some(&RegState::Failed("408 Request Timeout".into())));
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(30)));
        let retry = r.on_timeout(t0 + Duration::from_secs(30), &mut ch).unwrap();
        assert_eq!(retry.expires, 600);
        assert_eq!(ch.last(), Some(&RegState::Registering));
        r.on_response(&resp(503, "Service Unavailable"), t0 + Duration::from_secs(31), &mut ch);
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(91)), "doubled");
        r.on_timeout(t0 + Duration::from_secs(91), &mut ch);
        r.on_response(&resp(200, "OK"), t0 + Duration::from_secs(92), &mut ch);
        assert_eq!(ch.last(), Some(&RegState::Registered));
    }

    #[test]
    fn configured_backoff_base_doubles_up_to_the_cap() {
        let t0 = crate::time::test_epoch();
        let mut r = Registration::new(600).with_backoff_base(Duration::from_secs(2));
        let mut ch = Vec::new();
        r.start(&mut ch);
        let mut now = t0;
        for wait in [2, 4, 8, 16] {
            r.on_response(&resp(503, "Service Unavailable"), now, &mut ch);
            assert_eq!(r.next_deadline(), Some(now + Duration::from_secs(wait)));
            now += Duration::from_secs(wait);
            assert!(r.on_timeout(now, &mut ch).is_some(), "retried after {wait} s");
        }
        let mut r = Registration::new(600).with_backoff_base(Duration::from_secs(1000));
        r.start(&mut ch);
        r.on_response(&resp(408, "Request Timeout"), t0, &mut ch);
        r.on_timeout(t0 + Duration::from_secs(1000), &mut ch);
        r.on_response(&resp(408, "Request Timeout"), t0, &mut ch);
        assert_eq!(r.next_deadline(), Some(t0 + BACKOFF_MAX), "capped at 30 min");
    }

    #[test]
    fn unregister() {
        let t0 = crate::time::test_epoch();
        let mut r = Registration::new(600);
        let mut ch = Vec::new();
        assert_eq!(r.stop(), None, "never registered: nothing to remove");
        r.start(&mut ch);
        r.on_response(&resp(200, "OK"), t0, &mut ch);
        assert_eq!(r.stop(), Some(SendRegister { expires: 0, auth: None }));
        let c401 = RegResponse { challenges: vec![CH.into()], ..resp(401, "Unauthorized") };
        assert_eq!(r.on_response(&c401, t0, &mut ch).unwrap().expires, 0, "the un-REGISTER is authenticated too");
        r.on_response(&resp(200, "OK"), t0, &mut ch);
        assert_eq!(ch.last(), Some(&RegState::Unregistered));
        assert!(r.is_done());
    }
}
