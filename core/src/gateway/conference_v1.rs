//! Conferences for `sylkRTC-1` connections: the rooms' outputs for one request put in
//! SylkServer 4.1's order and words (`api::sylkrtc1_videoroom` has the shapes). 4.1 answered
//! `videoroom-join` and `videoroom-terminate` before it sent the session's `progress` /
//! `terminated` (the rooms, as SylkServer 5+, send them first), and worded its errors per
//! `videoroom-ctl` option.

use super::Gateway;
use crate::api::sylkrtc1_videoroom;
use crate::api::videoroom::{VideoroomEvent, VideoroomRequest};
use crate::api::Event;
use crate::conference::ConfOutput;
use crate::ids::ConnId;

impl Gateway {
    /// [`Gateway::conference_outputs`] of the rooms' outputs for `req` (transaction
    /// `transaction`) of sylkRTC-1 connection `conn`, in 4.1's order and words.
    pub(super) fn drain_conferences_v1(&mut self, conn: ConnId, transaction: &str, req: &VideoroomRequest) {
        let outputs: Vec<ConfOutput> = std::iter::from_fn(|| self.conferences.poll_output()).collect();
        self.conference_outputs(in_4_1_order(conn, transaction, req, outputs));
    }
}

/// `outputs` with the requester's own `progress` / `terminated` moved after its answer, and
/// its `error` in 4.1's words.
fn in_4_1_order(conn: ConnId, transaction: &str, req: &VideoroomRequest, outputs: Vec<ConfOutput>) -> Vec<ConfOutput> {
    let is_answer = |o: &ConfOutput| {
        matches!(o, ConfOutput::Event { conn: c, event: Event::Ack { transaction: t } | Event::Error { transaction: t, .. } }
            if *c == conn && t == transaction)
    };
    let Some(at) = outputs.iter().position(is_answer) else { return outputs };
    let own_state = |o: &ConfOutput| {
        matches!(o, ConfOutput::Event { conn: c, event: Event::Videoroom { session, event: VideoroomEvent::Progress | VideoroomEvent::Terminated { .. } } }
            if *c == conn && session == req.session())
    };
    let mut before = Vec::new();
    let mut held = Vec::new();
    let mut rest = outputs.into_iter();
    for o in rest.by_ref().take(at) {
        if own_state(&o) {
            held.push(o);
        } else {
            before.push(o);
        }
    }
    let answer = rest.next().map(|o| match o {
        ConfOutput::Event { conn, event: Event::Error { transaction, error } } => ConfOutput::Event {
            conn,
            event: Event::Error { transaction, error: sylkrtc1_videoroom::error_text(req, &error) },
        },
        other => other,
    });
    before.into_iter().chain(answer).chain(held).chain(rest).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conference::errors::ConfError;

    fn event(conn: u64, event: Event) -> ConfOutput {
        ConfOutput::Event { conn: ConnId(conn), event }
    }

    fn state(conn: u64, session: &str, e: VideoroomEvent) -> ConfOutput {
        event(conn, Event::Videoroom { session: session.into(), event: e })
    }

    #[test]
    fn the_answer_comes_before_the_session_state() {
        let leave = VideoroomRequest::Leave { session: "P".into() };
        let ack = event(1, Event::Ack { transaction: "t".into() });
        let left = state(2, "Q", VideoroomEvent::PublishersLeft(vec!["P".into()]));
        let terminated = state(1, "P", VideoroomEvent::Terminated { reason: None });
        let got = in_4_1_order(ConnId(1), "t", &leave, vec![terminated.clone(), ack.clone(), left.clone()]);
        assert_eq!(got, [ack.clone(), terminated.clone(), left.clone()]);
        // Another session's state, or another request's answer, stay where they are.
        let other = state(1, "R", VideoroomEvent::Progress);
        let got = in_4_1_order(ConnId(1), "t", &leave, vec![other.clone(), ack.clone()]);
        assert_eq!(got, [other, ack]);
        let got = in_4_1_order(ConnId(1), "u", &leave, vec![terminated.clone(), left.clone()]);
        assert_eq!(got, [terminated, left]);
    }

    /// The rooms' texts are `ConfError`'s Display: reworded from them, not from copies.
    #[test]
    fn errors_are_reworded_from_the_rooms_texts() {
        let attach = VideoroomRequest::FeedAttach { session: "P".into(), publisher: "Q".into(), feed: "F".into() };
        let cases = [
            (
                ConfError::UnknownSession { session: "P".into() },
                "feed-attach: unknown video room session ID specified: P",
            ),
            (ConfError::FeedInUse { feed: "F".into() }, "feed-attach: video room session ID (F) already in use"),
            (
                ConfError::UnknownPublisher { publisher: "Q".into() },
                "feed-attach: unknown publisher video room session ID specified: Q",
            ),
            (ConfError::TooManyFeeds, "Too many feeds on this connection"),
        ];
        for (e, want) in cases {
            let error = event(1, Event::Error { transaction: "t".into(), error: e.to_string() });
            let got = in_4_1_order(ConnId(1), "t", &attach, vec![error]);
            assert_eq!(got, [event(1, Event::Error { transaction: "t".into(), error: want.into() })]);
        }
        let detach = VideoroomRequest::FeedDetach { session: "P".into(), feed: "F".into() };
        let answer = VideoroomRequest::FeedAnswer { session: "P".into(), feed: "F".into(), sdp: String::new() };
        let join = VideoroomRequest::Join {
            session: "P".into(),
            account: "a@x.com".into(),
            uri: "r@x.com".into(),
            sdp: String::new(),
            audio: true,
            video: true,
        };
        let cases = [
            (
                &detach,
                ConfError::UnknownFeed { feed: "F".into(), detach: true },
                "feed-detach: unknown video room session ID specified: F",
            ),
            (
                &detach,
                ConfError::NotAttached { feed: "F".into(), session: "P".into() },
                "feed-detach: F is not an attached feed of P",
            ),
            (
                &answer,
                ConfError::UnknownFeed { feed: "F".into(), detach: false },
                "feed-answer: unknown video room session ID specified: F",
            ),
            (
                &answer,
                ConfError::NotAttached { feed: "F".into(), session: "P".into() },
                "feed-answer: unknown video room session ID specified: F",
            ),
            (&join, ConfError::SessionInUse { session: "P".into() }, "Video room session ID (P) already in use"),
            (&join, ConfError::NotAllowed { uri: "r@x.com".into() }, "a@x.com is not allowed to join room r@x.com"),
        ];
        for (req, e, want) in cases {
            assert_eq!(sylkrtc1_videoroom::error_text(req, &e.to_string()), want, "{e:?}");
        }
    }
}
