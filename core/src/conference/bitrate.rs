//! The video bitrate each publisher is told to keep to (REMB), from three limits:
//! - the room's `max_bitrate` split as SylkServer splits it (spec §2.4 `videoroom-configure`):
//!   with active speakers, `max_bitrate / len(active)` for them and [`OTHERS_BITRATE`] for the
//!   others; without, `max_bitrate / (n - 1)` for each of the `n` publishers;
//! - the `bitrate` of the publisher's own `videoroom-session-update`;
//! - what its subscribers can take: the lowest REMB of its feeds that receive video (each from
//!   the last [`ESTIMATE_TTL`]) **that is below what the publisher sends** (by more than
//!   1/[`CONGESTED`]), and a feed's `videoroom-session-update` `bitrate`. A browser's
//!   receive-side estimate stays near what it receives while that is all there is (it cannot
//!   see beyond an application-limited stream: at most 1.5 × incoming), so relayed verbatim it
//!   holds the publisher at its start rate for good (measured with Chromium: 60-100 kbit/s and
//!   downscaled video). Below the publisher's rate it means congestion on that subscriber's
//!   path, and then it caps the publisher, but not below [`SUBSCRIBER_FLOOR`]: a receive-side
//!   estimator also reads a busy CPU's delays as congestion, and once it has capped the
//!   publisher it keeps finding its stream "congested" a little below what arrives (measured
//!   with Chromium on a loaded machine: publishers held at 40-60 kbit/s for good). With no
//!   simulcast one slow subscriber slows the publisher for all: the price of forwarding without
//!   decoding.
//!
//! The REMB goes with the publisher's RTCP when the value moved by more than
//! 1/[`REMB_CHANGE`] or [`REMB_INTERVAL`] passed, checked on each video packet of the publisher
//! (no video, no REMB to send: no timer needed). A browser keeps its send-side estimate (TWCC)
//! under it.

use super::tables::{FeedId, ParticipantId};
use super::Conferences;
use crate::conference::limits::DEFAULT_MAX_BITRATE;
use std::time::{Duration, Instant};

/// What a non-active speaker may send while the room has active speakers (SylkServer's).
pub const OTHERS_BITRATE: u64 = 100_000;
/// The range of `max_bitrate` (SylkServer's `[Janus] max_bitrate` bounds).
pub const MAX_BITRATE_RANGE: (u64, u64) = (64_000, 4_194_304);
/// Never ask a publisher for less (below, video stalls rather than degrades).
pub const MIN_REMB: u64 = 30_000;
/// A REMB is repeated this often while the publisher sends video (RTCP may be lost).
pub const REMB_INTERVAL: Duration = Duration::from_secs(1);
/// A change of more than 1/this of the last value is sent at once.
pub const REMB_CHANGE: u64 = 20;
/// A subscriber's estimate counts this long (browsers send REMB about every second).
pub const ESTIMATE_TTL: Duration = Duration::from_secs(5);
/// The least a subscriber's estimate can bring a publisher to (Chromium's start bitrate: enough
/// for 640x360 at 30 fps).
pub const SUBSCRIBER_FLOOR: u64 = 300_000;
/// A subscriber's estimate below (1 - 1/this) of the publisher's rate is congestion.
pub const CONGESTED: u64 = 10;
/// The period a publisher's rate is measured over.
pub const RATE_PERIOD: Duration = Duration::from_secs(1);

/// SylkServer's share of `max_bitrate` for publisher `session` in a room of `members`
/// publishers with `active` speakers.
pub fn split(max_bitrate: u64, members: usize, active: &[String], session: &str) -> u64 {
    let max_bitrate = max_bitrate.clamp(MAX_BITRATE_RANGE.0, MAX_BITRATE_RANGE.1);
    if active.is_empty() {
        max_bitrate / (members.saturating_sub(1).max(1) as u64)
    } else if active.iter().any(|a| a == session) {
        max_bitrate / active.len() as u64
    } else {
        OTHERS_BITRATE
    }
}

impl Conferences {
    /// The most publisher `p` should send (bit/s) now: the least of the room's split, its own
    /// cap and its video subscribers' estimates when congested (at least [`SUBSCRIBER_FLOOR`]);
    /// never below [`MIN_REMB`].
    pub fn target_bitrate(&self, now: Instant, p: ParticipantId) -> Option<u64> {
        let part = self.participants.get(&p)?;
        let room = self.rooms.get(&part.room)?;
        let max = room.config.max_bitrate.map_or(u64::from(DEFAULT_MAX_BITRATE), u64::from);
        let mut target = split(max, room.members.len(), &room.active, &part.session);
        if let Some(own) = part.bitrate.and_then(|b| u64::try_from(b).ok()).filter(|b| *b > 0) {
            target = target.min(own);
        }
        let sending = part.media.rate.bps;
        for f in &part.subscribers {
            let Some(feed) = self.feeds.get(f) else { continue };
            if !feed.send_video || !feed.leg.is_connected() {
                continue;
            }
            let congested = feed.media.estimate.filter(|(b, at)| {
                now.saturating_duration_since(*at) <= ESTIMATE_TTL && *b < sending - sending / CONGESTED
            });
            let congested = congested.map(|(b, _)| b.max(SUBSCRIBER_FLOOR));
            for limit in [congested, feed.media.max_bitrate].into_iter().flatten() {
                target = target.min(limit);
            }
        }
        Some(target.max(MIN_REMB))
    }

    /// Publisher `p` sent video: a REMB if its target moved or [`REMB_INTERVAL`] passed. True
    /// when one was queued on its leg (to be drained).
    pub(super) fn maybe_remb(&mut self, now: Instant, p: ParticipantId) -> bool {
        let Some(target) = self.target_bitrate(now, p) else { return false };
        let Some(part) = self.participants.get_mut(&p) else { return false };
        let due = match part.media.remb {
            None => true,
            Some((last, at)) => {
                last.abs_diff(target) > last / REMB_CHANGE || now.saturating_duration_since(at) >= REMB_INTERVAL
            }
        };
        if !due || !part.leg.request_remb(target) {
            return false;
        }
        if part.media.remb.is_none_or(|(last, _)| last != target) {
            log::debug!("publisher#{}: REMB {target} bit/s", p.0);
        }
        part.media.remb = Some((target, now));
        true
    }

    /// Publisher `p` sent a packet of `bytes` payload: its rate.
    pub(super) fn measure(&mut self, now: Instant, p: ParticipantId, bytes: usize) {
        let Some(part) = self.participants.get_mut(&p) else { return };
        let rate = &mut part.media.rate;
        rate.bytes += bytes as u64;
        let since = *rate.since.get_or_insert(now);
        let elapsed = now.saturating_duration_since(since);
        if elapsed >= RATE_PERIOD {
            rate.bps = (u128::from(rate.bytes) * 8 * 1000 / elapsed.as_millis().max(1)) as u64;
            rate.bytes = 0;
            rate.since = Some(now);
        }
    }

    /// Feed `f`'s subscriber reported what it can receive (REMB).
    pub(super) fn receiver_estimate(&mut self, now: Instant, f: FeedId, bitrate: u64) {
        if let Some(feed) = self.feeds.get_mut(&f) {
            log::trace!("feed#{}: its browser takes {bitrate} bit/s", f.0);
            feed.media.estimate = Some((bitrate, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sylkserver_split() {
        let active = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(split(2_016_000, 1, &[], "a"), 2_016_000, "alone: all of it");
        assert_eq!(split(2_016_000, 3, &[], "a"), 1_008_000, "max / (n - 1)");
        assert_eq!(split(2_016_000, 3, &active(&["a", "b"]), "a"), 1_008_000, "max / len(active)");
        assert_eq!(split(2_016_000, 3, &active(&["a"]), "c"), OTHERS_BITRATE, "not active");
        assert_eq!(split(10, 2, &[], "a"), MAX_BITRATE_RANGE.0, "clamped into SylkServer's range");
    }
}
