//! What an operator decides about conferences: the limits (with their defaults) and the per-room
//! options of SylkServer's `[room@…]` sections (spec §6.1). Pure data; no other part of the core.

use serde::{Deserialize, Serialize};

/// Conference limits and room options (`Config::conference`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConferenceConfig {
    /// Rooms alive at once on one gateway (worker). Default [`DEFAULT_MAX_ROOMS`].
    pub max_rooms: usize,
    /// Publishers in one room. Default [`DEFAULT_MAX_PARTICIPANTS`].
    pub max_participants_per_room: usize,
    /// Subscriber PeerConnections (feeds) one WebSocket holds. Default [`DEFAULT_MAX_FEEDS`].
    pub max_feeds_per_connection: usize,
    /// `max_bitrate` (bit/s) of rooms that do not set their own (SylkServer's `[Janus]
    /// max_bitrate`). Default [`DEFAULT_MAX_BITRATE`].
    pub max_bitrate: u32,
    /// Per-room options; rooms not listed get [`RoomConfig::for_uri`]'s defaults.
    pub rooms: Vec<RoomConfig>,
    /// This gateway's worker index (set by the runtime; `conference::remote`).
    pub worker: usize,
    /// How many workers (gateways) the process runs (set by the runtime; default 1). With more
    /// than one, each room lives on its home worker (`remote::home_of`).
    pub workers: usize,
}

/// Default of [`ConferenceConfig::max_rooms`].
pub const DEFAULT_MAX_ROOMS: usize = 64;
/// Default of [`ConferenceConfig::max_participants_per_room`] (a 16-party room forwards 240
/// streams per medium).
pub const DEFAULT_MAX_PARTICIPANTS: usize = 16;
/// Most workers [`ConferenceConfig::worker_count`] believes in.
pub const MAX_WORKERS: usize = 1024;
/// Default of [`ConferenceConfig::max_feeds_per_connection`].
pub const DEFAULT_MAX_FEEDS: usize = 32;
/// Default of [`ConferenceConfig::max_bitrate`] (SylkServer's).
pub const DEFAULT_MAX_BITRATE: u32 = 2_016_000;

impl Default for ConferenceConfig {
    fn default() -> Self {
        Self {
            max_rooms: DEFAULT_MAX_ROOMS,
            max_participants_per_room: DEFAULT_MAX_PARTICIPANTS,
            max_feeds_per_connection: DEFAULT_MAX_FEEDS,
            max_bitrate: DEFAULT_MAX_BITRATE,
            rooms: Vec::new(),
            worker: 0,
            workers: 1,
        }
    }
}

impl ConferenceConfig {
    /// Whether every value is the default (capture headers leave it out then).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The worker count rooms are spread over: [`Self::workers`] when it is a sane setting (at
    /// most [`MAX_WORKERS`], this gateway's index below it), else 1 (every room here).
    pub fn worker_count(&self) -> usize {
        if self.workers <= MAX_WORKERS && self.worker < self.workers {
            self.workers
        } else {
            1
        }
    }

    /// The options of room `uri` (bare AOR): its section, else the defaults; `max_bitrate`
    /// always set (the room's, else [`ConferenceConfig::max_bitrate`]).
    pub fn room(&self, uri: &str) -> RoomConfig {
        let mut room = self
            .rooms
            .iter()
            .find(|r| r.uri.eq_ignore_ascii_case(uri))
            .cloned()
            .unwrap_or_else(|| RoomConfig::for_uri(uri));
        room.max_bitrate = room.max_bitrate.or(Some(self.max_bitrate));
        room
    }
}

/// The order `allow` and `deny` are applied in (`access_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessPolicy {
    /// `allow, deny` (default): allowed if `allow` matches and `deny` does not.
    AllowDeny,
    /// `deny, allow`: allowed unless `deny` matches, or if `allow` matches.
    DenyAllow,
}

/// One room's options (SylkServer `[room@videoconference.example.com]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    /// The room's AOR.
    pub uri: String,
    /// `access_policy`.
    pub access_policy: AccessPolicy,
    /// `allow`: `all`, `none`, or a list of AORs and domains. Default `all`.
    pub allow: Vec<String>,
    /// `deny`: as `allow`. Default none.
    pub deny: Vec<String>,
    /// `max_bitrate` (bit/s) shared by the room's senders (`conference::bitrate`). `None`: the
    /// gateway's [`ConferenceConfig::max_bitrate`].
    pub max_bitrate: Option<u32>,
    /// `video_codec`: `vp8` or `h264` restricts the room's video to it; `None` takes both.
    pub video_codec: Option<String>,
    /// `video_disabled`: audio only, whatever the joiners ask.
    pub video_disabled: bool,
}

impl RoomConfig {
    /// SylkServer's defaults for room `uri`.
    pub fn for_uri(uri: &str) -> Self {
        Self {
            uri: uri.to_string(),
            access_policy: AccessPolicy::AllowDeny,
            allow: vec!["all".into()],
            deny: Vec::new(),
            max_bitrate: None,
            video_codec: None,
            video_disabled: false,
        }
    }

    /// Whether `aor` may join (SylkServer `Videoroom.allow_uri`).
    pub fn allows(&self, aor: &str) -> bool {
        let allow = matches_any(&self.allow, aor);
        let deny = matches_any(&self.deny, aor);
        match self.access_policy {
            AccessPolicy::AllowDeny => allow && !deny,
            AccessPolicy::DenyAllow => !deny || allow,
        }
    }
}

/// A policy list matches `aor`: `all`/`*`, the AOR itself, or its domain.
fn matches_any(list: &[String], aor: &str) -> bool {
    let domain = aor.rsplit_once('@').map_or(aor, |(_, d)| d);
    list.iter().any(|e| {
        let e = e.trim();
        e.eq_ignore_ascii_case("all") || e == "*" || e.eq_ignore_ascii_case(aor) || e.eq_ignore_ascii_case(domain)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sane_worker_setting_spreads_rooms() {
        let with = |worker, workers| ConferenceConfig { worker, workers, ..ConferenceConfig::default() };
        assert_eq!(ConferenceConfig::default().worker_count(), 1);
        assert_eq!(with(1, 2).worker_count(), 2);
        assert_eq!(with(2, 2).worker_count(), 1, "an index beyond the count");
        assert_eq!(with(0, 0).worker_count(), 1);
        assert_eq!(with(0, usize::MAX).worker_count(), 1, "a capture header cannot ask for a huge fan-out");
    }

    #[test]
    fn access_policies() {
        let mut r = RoomConfig::for_uri("room@conf.example.com");
        assert!(r.allows("alice@example.com"));
        r.deny = vec!["evil.test".into()];
        assert!(!r.allows("mallory@evil.test"));
        assert!(r.allows("alice@example.com"));
        r.allow = vec!["example.com".into()];
        assert!(!r.allows("bob@other.test"));
        r.access_policy = AccessPolicy::DenyAllow;
        assert!(r.allows("bob@other.test"));
        r.allow = vec!["mallory@evil.test".into()];
        assert!(r.allows("mallory@evil.test"));
        r.allow = vec!["none".into()];
        r.access_policy = AccessPolicy::AllowDeny;
        assert!(!r.allows("alice@example.com"));
    }
}
