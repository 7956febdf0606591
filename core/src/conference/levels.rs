//! Audio levels of a room's publishers: `conference-audio-levels` to every participant, a
//! beyond-SylkServer extra that sylkrtc.js reads (spec §3.4) and SylkServer never sends.
//!
//! The levels come from the publishers' RFC 6464 `ssrc-audio-level` header extension (the
//! browser measures; nothing is decoded). Each [`LEVELS_INTERVAL`] a room whose levels changed
//! since its last report sends one event with every member's peak and mean amplitude of the
//! period (a publisher that sent no level, or whose audio is paused, is 0). The timer runs while
//! any publisher sends levels or a room's last report was not all silence, so a quiet room
//! stops reporting after one all-zero event.

use super::tables::LevelWindow;
use super::Conferences;
use crate::api::videoroom::{AudioLevel, VideoroomEvent as V};
use std::time::{Duration, Instant};

/// How often levels are reported, at most.
pub const LEVELS_INTERVAL: Duration = Duration::from_millis(500);

/// An RFC 6464 level (0..=127, -dBov) as hundredths of full-scale amplitude (W3C
/// `RTCRtpSynchronizationSource.audioLevel`: 10^(-dBov/20)).
pub fn hundredths(level: u8) -> u8 {
    (amplitude(level) * 100.0).round() as u8
}

fn amplitude(level: u8) -> f64 {
    10f64.powf(-f64::from(level.min(127)) / 20.0)
}

impl LevelWindow {
    /// One packet's level, as str0m reads the extension (`-level`, 0 = loudest).
    pub fn add(&mut self, ext: i8) {
        let level = ext.unsigned_abs().min(127);
        self.loudest = Some(self.loudest.map_or(level, |l| l.min(level)));
        self.amplitude_sum += amplitude(level);
        self.packets += 1;
    }

    /// (peak, mean) in hundredths; (0, 0) without packets.
    pub fn report(&self) -> (u8, u8) {
        match self.loudest {
            Some(l) => (hundredths(l), (self.amplitude_sum / f64::from(self.packets) * 100.0).round() as u8),
            None => (0, 0),
        }
    }
}

impl Conferences {
    /// Publisher `p`'s audio packet carried level `ext`: noted, and the levels timer armed.
    pub(super) fn note_level(&mut self, now: Instant, p: super::tables::ParticipantId, ext: i8) {
        let Some(part) = self.participants.get_mut(&p) else { return };
        part.media.levels.add(ext);
        if self.levels_due.is_none() {
            self.levels_due = Some(now + LEVELS_INTERVAL);
        }
    }

    /// The levels timer (`levels_due`) fired: each room whose levels changed reports them to
    /// every member; the timer is re-armed while levels come in or a report was not silent.
    pub(super) fn report_levels(&mut self, now: Instant) {
        self.levels_due = None;
        let mut again = false;
        let uris: Vec<String> = self.rooms.keys().cloned().collect();
        for uri in uris {
            let Some(room) = self.rooms.get(&uri) else { continue };
            let members = room.members.clone();
            let mut levels = Vec::with_capacity(members.len());
            for m in &members {
                let Some(p) = self.participants.get_mut(m) else { continue };
                let window = std::mem::take(&mut p.media.levels);
                again |= window.packets > 0;
                let (peak, mean) = window.report();
                levels.push((p.session.clone(), peak, mean));
            }
            let Some(room) = self.rooms.get_mut(&uri) else { continue };
            again |= levels.iter().any(|(_, peak, _)| *peak > 0);
            if levels == room.levels_sent {
                continue;
            }
            room.levels_sent.clone_from(&levels);
            let event = V::AudioLevels(
                levels
                    .into_iter()
                    .map(|(participant_id, rx_peak, rx)| AudioLevel { participant_id, rx_peak, rx })
                    .collect(),
            );
            for m in &members {
                if let Some((conn, session)) = self.participants.get(m).map(|p| (p.conn, p.session.clone())) {
                    self.event(conn, &session, event.clone());
                }
            }
        }
        if again {
            self.levels_due = Some(now + LEVELS_INTERVAL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_as_amplitude_hundredths() {
        assert_eq!((hundredths(0), hundredths(20), hundredths(6), hundredths(127)), (100, 10, 50, 0));
        let mut w = LevelWindow::default();
        assert_eq!(w.report(), (0, 0), "no packets: silent");
        w.add(-20);
        w.add(-127);
        assert_eq!(w.report(), (10, 5), "peak of the loudest, mean of the amplitudes");
    }
}
