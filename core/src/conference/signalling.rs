//! The `videoroom-*` requests (spec §2.4): each answered with exactly one `ack` or `error`, with
//! the events it causes before or after it in SylkServer's order (module docs of `conference`).

use super::errors::ConfError;
use super::tables::{Feed, FeedId, LegKey, Participant, ParticipantId, Room};
use super::{ConfOutput, Conferences, Env};
use crate::api::videoroom::{Publisher, VideoroomEvent as V, VideoroomRequest as R};
use crate::api::{AccountEvent, Event, IceCandidate, Identity};
use crate::ids::ConnId;
use crate::media::rtp::SeqTsRewriter;
use crate::media::sdp::{self, Codec, MediaKind, SessionDescription};
use crate::media::webrtc::BrowserLeg;
use std::collections::BTreeSet;

/// `originator` of `configure` events the room itself causes.
const ROOM_ORIGINATOR: &str = "videoroom";

/// Events that follow a request's `ack`.
type After = Vec<ConfOutput>;

impl Conferences {
    /// Carries out `req` from WebSocket `conn`: its events before the answer, the `ack` or
    /// `error` (transaction `transaction`), the events after it. `account` is the joining
    /// account of a `videoroom-join` as this connection added it (`None`: not added).
    pub fn request(&mut self, env: &mut Env<'_>, conn: ConnId, transaction: String, req: R, account: Option<Identity>) {
        let kind = req.kind();
        let result = match req {
            R::Join { session, account: aor, uri, sdp, audio, video } => {
                self.join(env, conn, session, (aor, account), uri, &sdp, (audio, video))
            }
            R::Leave { session } => self.leave(env, conn, &session),
            R::Configure { session, active_participants } => self.configure(conn, &session, active_participants),
            R::FeedAttach { session, publisher, feed } => self.feed_attach(env, conn, &session, &publisher, feed),
            R::FeedAnswer { session, feed, sdp } => self.feed_answer(env, conn, &session, &feed, &sdp),
            R::FeedDetach { session, feed } => self.feed_detach(env, conn, &session, &feed),
            R::Invite { session, participants } => self.invite(env, conn, &session, participants),
            R::Trickle { session, candidates } => self.trickle(env, conn, &session, &candidates),
            R::SessionUpdate { session, audio, video, bitrate } => {
                self.session_update(env, conn, &session, (audio, video, bitrate))
            }
            R::Message { session, message_id, content, content_type } => {
                self.message(env, conn, &session, message_id, content, content_type)
            }
            R::Composing { session, state, refresh } => self.composing(conn, &session, state, refresh),
            R::MuteAudio { session } => self.mute_audio(conn, &session),
            R::ToggleHand { session, session_id } => self.toggle_hand(conn, &session, session_id),
        };
        match result {
            Ok(after) => {
                self.out.push_back(ConfOutput::Event { conn, event: Event::Ack { transaction } });
                self.out.extend(after);
            }
            Err(e) => {
                log::info!("{conn}: {kind} failed ({transaction}): {e}");
                self.out
                    .push_back(ConfOutput::Event { conn, event: Event::Error { transaction, error: e.to_string() } });
            }
        }
        self.reap(env);
    }

    /// The connection is gone: it leaves every room (the others get `publishers-left`), its
    /// feeds are detached, its legs closed and forgotten.
    pub fn conn_gone(&mut self, env: &mut Env<'_>, conn: ConnId) {
        let keys: Vec<LegKey> = self
            .sessions
            .range((conn, String::new())..)
            .take_while(|((c, _), _)| *c == conn)
            .map(|(_, k)| *k)
            .collect();
        for key in keys {
            match key {
                LegKey::Publisher(p) => {
                    let after = self.remove_participant(env, p);
                    self.out.extend(after);
                }
                LegKey::Feed(f) => self.remove_feed(env, f),
            }
        }
    }

    // ===== Requests =====

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        env: &mut Env<'_>,
        conn: ConnId,
        session: String,
        (aor, identity): (String, Option<Identity>),
        uri: String,
        offer: &str,
        (audio, video): (bool, bool),
    ) -> Result<After, ConfError> {
        if self.sessions.contains_key(&(conn, session.clone())) {
            return Err(ConfError::SessionInUse { session });
        }
        let identity = identity.ok_or(ConfError::UnknownAccount { account: aor.clone() })?;
        let (config, room_audio, room_video) = match self.rooms.get(&uri) {
            Some(room) => {
                if !room.config.allows(&aor) {
                    return Err(ConfError::NotAllowed { uri });
                }
                if room.members.len() >= env.config.max_participants_per_room {
                    return Err(ConfError::RoomFull { uri });
                }
                if room.members.iter().any(|m| self.participants.get(m).is_some_and(|p| p.session == session)) {
                    return Err(ConfError::SessionInUse { session });
                }
                (room.config.clone(), room.audio, room.video)
            }
            None => {
                let config = env.config.room(&uri);
                if !config.allows(&aor) {
                    return Err(ConfError::NotAllowed { uri });
                }
                if self.rooms.len() >= env.config.max_rooms {
                    return Err(ConfError::TooManyRooms);
                }
                let video = video && !config.video_disabled;
                (config, audio, video)
            }
        };
        let (Some(cert), Some(candidates)) = (env.cert, env.candidates.as_deref()) else {
            return Err(ConfError::MediaUnavailable);
        };
        let desc =
            SessionDescription::parse(offer.as_bytes()).map_err(|e| ConfError::BadSdp { why: e.as_str().into() })?;
        let allowed = carried(&desc, room_video, config.video_codec.as_deref());
        let mut leg = BrowserLeg::new(cert, candidates, env.rng);
        leg.set_sfu_options(super::nack::PUBLISHER);
        let answer =
            leg.accept_offer(offer, &allowed, env.now).map_err(|e| ConfError::BadSdp { why: e.to_string() })?;
        let codecs = answered(&answer);
        let id = ParticipantId(self.next_id());
        let key = LegKey::Publisher(id);
        if self.demux.register(leg.ufrag(), key).is_err() {
            return Err(ConfError::MediaUnavailable);
        }
        let room = self.rooms.entry(uri.clone()).or_insert_with(|| {
            log::info!("room {uri} created");
            Room {
                config,
                audio: room_audio,
                video: room_video,
                members: Vec::new(),
                active: Vec::new(),
                hands: Vec::new(),
                levels_sent: Vec::new(),
            }
        });
        let others: Vec<ParticipantId> = room.members.clone();
        room.members.push(id);
        let (active, hands) = (room.active.clone(), room.hands.clone());
        log::info!("{conn}: {} joined room {uri} as {session} ({key})", identity.uri);
        let me = publisher(&session, &identity);
        self.participants.insert(
            id,
            Participant {
                conn,
                session: session.clone(),
                identity,
                room: uri,
                leg,
                codecs,
                subscribers: BTreeSet::new(),
                feeds: BTreeSet::new(),
                send_audio: true,
                send_video: true,
                bitrate: None,
                media: Default::default(),
            },
        );
        self.sessions.insert((conn, session.clone()), key);
        // `progress` precedes the ack (spec §1.5).
        self.event(conn, &session, V::Progress);
        let mut after = Vec::new();
        let ev = |event| ConfOutput::Event { conn, event: Event::Videoroom { session: session.clone(), event } };
        after.push(ev(V::Accepted { sdp: answer, audio: room_audio, video: room_video }));
        let initial: Vec<Publisher> = others
            .iter()
            .filter_map(|o| self.participants.get(o))
            .map(|p| publisher(&p.session, &p.identity))
            .collect();
        after.push(ev(V::InitialPublishers(initial)));
        if !active.is_empty() {
            after.push(ev(V::Configure { originator: ROOM_ORIGINATOR.into(), active_participants: active }));
        }
        if !hands.is_empty() {
            after.push(ev(V::RaisedHands(hands)));
        }
        for o in &others {
            if let Some(p) = self.participants.get(o) {
                let event =
                    Event::Videoroom { session: p.session.clone(), event: V::PublishersJoined(vec![me.clone()]) };
                after.push(ConfOutput::Event { conn: p.conn, event });
            }
        }
        self.drain(env.now, key);
        Ok(after)
    }

    fn leave(&mut self, env: &mut Env<'_>, conn: ConnId, session: &str) -> Result<After, ConfError> {
        let Some(&LegKey::Publisher(p)) = self.sessions.get(&(conn, session.to_string())) else {
            return Err(ConfError::UnknownSession { session: session.into() });
        };
        // `terminated` precedes the ack (spec §1.5).
        self.event(conn, session, V::Terminated { reason: None });
        Ok(self.remove_participant(env, p))
    }

    fn configure(&mut self, conn: ConnId, session: &str, active: Vec<String>) -> Result<After, ConfError> {
        let p = self.participant_of(conn, session)?;
        let room = self.room_of(p)?;
        let ids = self.room_sessions(&room);
        let unknown: Vec<String> = active.iter().filter(|a| !ids.contains(*a)).cloned().collect();
        if !unknown.is_empty() {
            return Err(ConfError::UnknownParticipants { ids: unknown });
        }
        if let Some(r) = self.rooms.get_mut(room.as_str()) {
            r.active.clone_from(&active);
        }
        let event = V::Configure { originator: session.to_string(), active_participants: active };
        self.send_room(&room, None, &event);
        Ok(Vec::new())
    }

    fn feed_attach(
        &mut self,
        env: &mut Env<'_>,
        conn: ConnId,
        session: &str,
        publisher_session: &str,
        feed: String,
    ) -> Result<After, ConfError> {
        if self.sessions.contains_key(&(conn, feed.clone())) {
            return Err(ConfError::FeedInUse { feed });
        }
        let parent = self.participant_of(conn, session)?;
        let room_uri = self.room_of(parent)?;
        let room = self.rooms.get(&room_uri).ok_or(ConfError::UnknownSession { session: session.into() })?;
        let publisher = room
            .members
            .iter()
            .copied()
            .find(|m| self.participants.get(m).is_some_and(|p| p.session == publisher_session))
            .ok_or(ConfError::UnknownPublisher { publisher: publisher_session.into() })?;
        let held = self.feeds.values().filter(|f| f.conn == conn).count();
        if held >= env.config.max_feeds_per_connection {
            return Err(ConfError::TooManyFeeds);
        }
        let (Some(cert), Some(candidates)) = (env.cert, env.candidates.as_deref()) else {
            return Err(ConfError::MediaUnavailable);
        };
        let video = room.video;
        let allowed: Vec<Codec> = self
            .participants
            .get(&publisher)
            .map(|p| p.codecs.iter().filter(|c| video || !c.is_video()).cloned().collect())
            .unwrap_or_default();
        let mut leg = BrowserLeg::new(cert, candidates, env.rng);
        leg.set_sfu_options(super::nack::FEED);
        let offer = leg.create_offer(&allowed, env.now).map_err(|e| ConfError::BadSdp { why: e.to_string() })?;
        let id = FeedId(self.next_id());
        let key = LegKey::Feed(id);
        if self.demux.register(leg.ufrag(), key).is_err() {
            return Err(ConfError::MediaUnavailable);
        }
        // Outgoing sequence numbers start low (the SRTP rollover counter must start at 0).
        let audio = SeqTsRewriter::new((env.rng.next_u64() & 0x3fff) as u16, env.rng.next_u64() as u32);
        let video_rw = SeqTsRewriter::new((env.rng.next_u64() & 0x3fff) as u16, env.rng.next_u64() as u32);
        self.feeds.insert(
            id,
            Feed {
                conn,
                id: feed.clone(),
                parent,
                publisher,
                leg,
                audio,
                video: video_rw,
                send_audio: true,
                send_video: true,
                established: false,
                media: Default::default(),
            },
        );
        self.sessions.insert((conn, feed.clone()), key);
        if let Some(p) = self.participants.get_mut(&parent) {
            p.feeds.insert(id);
        }
        if let Some(p) = self.participants.get_mut(&publisher) {
            p.subscribers.insert(id);
        }
        log::debug!("{conn}: feed {feed} ({key}) of {session} receives {publisher_session}");
        self.drain(env.now, key);
        let parent_session = self.participants.get(&parent).map(|p| p.session.clone()).unwrap_or_default();
        let event = Event::Videoroom { session: parent_session, event: V::FeedAttached { feed, sdp: offer } };
        Ok(vec![ConfOutput::Event { conn, event }])
    }

    /// The feed `feed` of this connection, attached through `session`.
    fn own_feed(&self, conn: ConnId, session: &str, feed: &str, detach: bool) -> Result<FeedId, ConfError> {
        let Some(&LegKey::Feed(f)) = self.sessions.get(&(conn, feed.to_string())) else {
            return Err(ConfError::UnknownFeed { feed: feed.into(), detach });
        };
        let parent = self.feeds.get(&f).and_then(|x| self.participants.get(&x.parent));
        if parent.is_none_or(|p| p.session != session) {
            return Err(ConfError::NotAttached { feed: feed.into(), session: session.into() });
        }
        Ok(f)
    }

    fn feed_answer(
        &mut self,
        env: &mut Env<'_>,
        conn: ConnId,
        session: &str,
        feed: &str,
        sdp: &str,
    ) -> Result<After, ConfError> {
        let f = self.own_feed(conn, session, feed, false)?;
        let x = self.feeds.get_mut(&f).ok_or(ConfError::UnknownFeed { feed: feed.into(), detach: false })?;
        let result = x.leg.accept_answer(sdp, env.now).map_err(|e| ConfError::BadSdp { why: e.to_string() });
        self.drain(env.now, LegKey::Feed(f));
        result.map(|()| Vec::new())
    }

    fn feed_detach(&mut self, env: &mut Env<'_>, conn: ConnId, session: &str, feed: &str) -> Result<After, ConfError> {
        let f = self.own_feed(conn, session, feed, true)?;
        self.remove_feed(env, f);
        Ok(Vec::new())
    }

    fn invite(
        &mut self,
        env: &mut Env<'_>,
        conn: ConnId,
        session: &str,
        participants: Vec<String>,
    ) -> Result<After, ConfError> {
        let p = self.participant_of(conn, session)?;
        let room = self.room_of(p)?;
        let originator = self.identity(p).ok_or(ConfError::UnknownSession { session: session.into() })?;
        let h = env.rng.hex(32);
        let session_id = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
        for account in participants {
            let event = AccountEvent::ConferenceInvite {
                room: room.clone(),
                session_id: session_id.clone(),
                originator: originator.clone(),
            };
            let event = Event::Account { account: account.clone(), event };
            self.out.push_back(ConfOutput::ToAccount { except: conn, account, event });
        }
        Ok(Vec::new())
    }

    fn trickle(
        &mut self,
        env: &mut Env<'_>,
        conn: ConnId,
        session: &str,
        candidates: &[IceCandidate],
    ) -> Result<After, ConfError> {
        let key = *self
            .sessions
            .get(&(conn, session.to_string()))
            .ok_or(ConfError::UnknownSession { session: session.into() })?;
        let leg = match key {
            LegKey::Publisher(p) => self.participants.get_mut(&p).map(|p| &mut p.leg),
            LegKey::Feed(f) => self.feeds.get_mut(&f).map(|f| &mut f.leg),
        };
        if let Some(leg) = leg {
            // As for calls: a candidate that cannot be used is dropped and the request acked
            // (with ICE-lite the browser's checks reveal its addresses anyway).
            for c in candidates {
                if let Err(e) = leg.add_remote_candidate(&c.candidate) {
                    log::debug!("{key}: candidate {:?} ignored: {e}", c.candidate);
                }
            }
        }
        self.drain(env.now, key);
        Ok(Vec::new())
    }

    fn session_update(
        &mut self,
        env: &mut Env<'_>,
        conn: ConnId,
        session: &str,
        (audio, video, bitrate): (Option<bool>, Option<bool>, Option<i64>),
    ) -> Result<After, ConfError> {
        let key = *self
            .sessions
            .get(&(conn, session.to_string()))
            .ok_or(ConfError::UnknownSession { session: session.into() })?;
        match key {
            LegKey::Publisher(p) => {
                if let Some(p) = self.participants.get_mut(&p) {
                    p.send_audio = audio.unwrap_or(p.send_audio);
                    p.send_video = video.unwrap_or(p.send_video);
                    p.bitrate = bitrate.or(p.bitrate);
                }
            }
            LegKey::Feed(f) => {
                let Some(x) = self.feeds.get_mut(&f) else { return Ok(Vec::new()) };
                x.send_audio = audio.unwrap_or(x.send_audio);
                let resumed = video == Some(true) && !x.send_video;
                x.send_video = video.unwrap_or(x.send_video);
                if let Some(b) = bitrate {
                    // A cap on what its publisher is told to send (`bitrate`); 0 or less: none.
                    x.media.max_bitrate = u64::try_from(b).ok().filter(|b| *b > 0);
                }
                let publisher = x.publisher;
                if resumed {
                    // The subscriber's decoder needs a key frame to start again.
                    if self.keyframe(publisher, false) {
                        self.drain(env.now, LegKey::Publisher(publisher));
                    }
                }
            }
        }
        Ok(Vec::new())
    }

    fn message(
        &mut self,
        env: &mut Env<'_>,
        conn: ConnId,
        session: &str,
        message_id: String,
        content: String,
        content_type: String,
    ) -> Result<After, ConfError> {
        let p = self.participant_of(conn, session)?;
        let room = self.room_of(p)?;
        let sender = self.identity(p).ok_or(ConfError::UnknownSession { session: session.into() })?;
        let own = self.participants.get(&p).map(|x| x.session.clone()).unwrap_or_default();
        let micros = i64::try_from(env.unix.as_micros()).unwrap_or(i64::MAX);
        let timestamp = crate::storage::iso::format(crate::storage::message::UnixMicros(micros));
        let event = V::Message { kind: "normal", content, content_type, sender, timestamp };
        let mut after = self.room_events(&room, Some(p), &event);
        let delivery = V::MessageDelivery { message_id, delivered: true, code: 200, reason: "OK".into() };
        after.push(ConfOutput::Event { conn, event: Event::Videoroom { session: own, event: delivery } });
        Ok(after)
    }

    fn composing(
        &mut self,
        conn: ConnId,
        session: &str,
        state: String,
        refresh: Option<i64>,
    ) -> Result<After, ConfError> {
        let p = self.participant_of(conn, session)?;
        let room = self.room_of(p)?;
        let sender = self.identity(p).ok_or(ConfError::UnknownSession { session: session.into() })?;
        // RFC 3994 §3: the refresh defaults to 120 s.
        let event = V::Composing { state, refresh: refresh.unwrap_or(120), content_type: "text".into(), sender };
        Ok(self.room_events(&room, Some(p), &event))
    }

    fn mute_audio(&mut self, conn: ConnId, session: &str) -> Result<After, ConfError> {
        let p = self.participant_of(conn, session)?;
        let room = self.room_of(p)?;
        self.send_room(&room, None, &V::MuteAudio { originator: session.to_string() });
        Ok(Vec::new())
    }

    fn toggle_hand(&mut self, conn: ConnId, session: &str, session_id: Option<String>) -> Result<After, ConfError> {
        let p = self.participant_of(conn, session)?;
        let room = self.room_of(p)?;
        let who = session_id.unwrap_or_else(|| session.to_string());
        let hands = match self.rooms.get_mut(&room) {
            Some(r) => {
                match r.hands.iter().position(|h| *h == who) {
                    Some(i) => {
                        r.hands.remove(i);
                    }
                    None => r.hands.push(who),
                }
                r.hands.clone()
            }
            None => Vec::new(),
        };
        self.send_room(&room, None, &V::RaisedHands(hands));
        Ok(Vec::new())
    }

    // ===== Tables =====

    /// The participant a session (publisher or feed id) of `conn` belongs to.
    fn participant_of(&self, conn: ConnId, session: &str) -> Result<ParticipantId, ConfError> {
        match self.sessions.get(&(conn, session.to_string())) {
            Some(LegKey::Publisher(p)) => Ok(*p),
            Some(LegKey::Feed(f)) => {
                self.feeds.get(f).map(|f| f.parent).ok_or(ConfError::UnknownSession { session: session.into() })
            }
            None => Err(ConfError::UnknownSession { session: session.into() }),
        }
    }

    fn room_of(&self, p: ParticipantId) -> Result<String, ConfError> {
        self.participants.get(&p).map(|p| p.room.clone()).ok_or(ConfError::UnknownSession { session: String::new() })
    }

    /// The publisher session ids in room `uri`.
    fn room_sessions(&self, uri: &str) -> Vec<String> {
        let members = self.rooms.get(uri).map(|r| r.members.as_slice()).unwrap_or_default();
        members.iter().filter_map(|m| self.participants.get(m)).map(|p| p.session.clone()).collect()
    }

    /// `event` for every participant of room `uri` but `except`, each on its own session.
    fn room_events(&self, uri: &str, except: Option<ParticipantId>, event: &V) -> Vec<ConfOutput> {
        let members = self.rooms.get(uri).map(|r| r.members.as_slice()).unwrap_or_default();
        members
            .iter()
            .filter(|m| Some(**m) != except)
            .filter_map(|m| self.participants.get(m))
            .map(|p| ConfOutput::Event {
                conn: p.conn,
                event: Event::Videoroom { session: p.session.clone(), event: event.clone() },
            })
            .collect()
    }

    /// [`Self::room_events`], queued now (before the request's answer).
    fn send_room(&mut self, uri: &str, except: Option<ParticipantId>, event: &V) {
        let events = self.room_events(uri, except, event);
        self.out.extend(events);
    }

    /// Takes participant `p` out of its room: its feeds and the feeds receiving it are detached,
    /// its leg closed; returns the events for the others (`publishers-left`, `configure` when
    /// an active speaker left). An empty room is removed.
    pub(super) fn remove_participant(&mut self, env: &mut Env<'_>, p: ParticipantId) -> After {
        let Some(part) = self.participants.get(&p) else { return Vec::new() };
        let doomed: Vec<FeedId> = part.feeds.iter().chain(part.subscribers.iter()).copied().collect();
        for f in doomed {
            self.remove_feed(env, f);
        }
        let Some(mut part) = self.participants.remove(&p) else { return Vec::new() };
        let key = LegKey::Publisher(p);
        self.sessions.remove(&(part.conn, part.session.clone()));
        self.out.push_back(ConfOutput::SessionClosed { conn: part.conn, session: part.session.clone() });
        self.demux.remove(key);
        self.timers.stop(key);
        self.close_leg(env.now, &mut part.leg);
        log::info!("{}: {} left room {} ({key})", part.conn, part.identity.uri, part.room);
        let mut after = Vec::new();
        let Some(room) = self.rooms.get_mut(&part.room) else { return after };
        room.members.retain(|m| *m != p);
        room.hands.retain(|h| *h != part.session);
        let was_active = room.active.contains(&part.session);
        room.active.retain(|a| *a != part.session);
        let active = room.active.clone();
        if room.members.is_empty() {
            log::info!("room {} removed", part.room);
            self.rooms.remove(&part.room);
            return after;
        }
        after.extend(self.room_events(&part.room, None, &V::PublishersLeft(vec![part.session.clone()])));
        if was_active {
            let configure = V::Configure { originator: ROOM_ORIGINATOR.into(), active_participants: active };
            after.extend(self.room_events(&part.room, None, &configure));
        }
        after
    }

    /// Detaches feed `f`: its leg closed, forgotten by its parent and its publisher.
    pub(super) fn remove_feed(&mut self, env: &mut Env<'_>, f: FeedId) {
        let Some(mut feed) = self.feeds.remove(&f) else { return };
        let key = LegKey::Feed(f);
        self.sessions.remove(&(feed.conn, feed.id.clone()));
        self.out.push_back(ConfOutput::SessionClosed { conn: feed.conn, session: feed.id.clone() });
        self.demux.remove(key);
        self.timers.stop(key);
        if let Some(p) = self.participants.get_mut(&feed.parent) {
            p.feeds.remove(&f);
        }
        if let Some(p) = self.participants.get_mut(&feed.publisher) {
            p.subscribers.remove(&f);
        }
        self.close_leg(env.now, &mut feed.leg);
        log::debug!("{}: feed {} ({key}) detached", feed.conn, feed.id);
    }
}

/// The codecs of the browser's offer we forward: audio as for calls (Opus, G722, PCMU, PCMA,
/// telephone-event), video (VP8, H.264) when the room has video, restricted to the room's
/// `video_codec` when set.
fn carried(desc: &SessionDescription, video: bool, video_codec: Option<&str>) -> Vec<Codec> {
    let mut out = Vec::new();
    if let Some(m) = desc.media.iter().find(|m| m.kind == MediaKind::Audio && !m.is_rejected()) {
        out.extend(sdp::intersect(&m.codecs(), &crate::call::supported_codecs()));
    }
    if let (true, Some(m)) = (video, desc.media.iter().find(|m| m.kind == MediaKind::Video && !m.is_rejected())) {
        let v = sdp::intersect(&m.codecs(), &crate::call::supported_video_codecs());
        out.extend(v.into_iter().filter(|c| video_codec.is_none_or(|want| c.name.eq_ignore_ascii_case(want))));
    }
    out
}

/// The codecs of our answer's m-lines in use: what the publisher sends, at its PTs.
fn answered(answer: &str) -> Vec<Codec> {
    let Ok(desc) = SessionDescription::parse(answer.as_bytes()) else { return Vec::new() };
    desc.media.iter().filter(|m| !m.is_rejected()).flat_map(|m| m.codecs()).collect()
}

fn publisher(session: &str, identity: &Identity) -> Publisher {
    Publisher {
        id: session.to_string(),
        uri: identity.uri.clone(),
        display_name: identity.display_name.clone().unwrap_or_default(),
    }
}
