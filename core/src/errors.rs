//! Typed errors of the client layer (`client.rs`: account requests) and the call layer
//! (`gateway/calls`: session requests, SIP answers), and the one place that maps them to
//! SylkServer's strings: their `Display` is exactly the text of the sylkRTC `error` (or, for
//! [`AnswerError`], the `terminated` reason) that goes to the browser (spec
//! `sylkrtc-protocol.md` §2, §5).

use crate::media::sdp::SdpError;
use crate::media::webrtc::WebRtcError;
use std::fmt;

/// The `error` for an `account-add` beyond `Config::max_accounts_per_connection`.
pub const TOO_MANY_ACCOUNTS: &str = "Too many accounts on this connection";
/// The `error` for a `session-create` beyond `Config::max_sessions_per_connection`.
pub const TOO_MANY_SESSIONS: &str = "Too many sessions on this connection";
/// The `error` (and WebSocket close reason) for a request beyond
/// `Config::max_requests_per_second`.
pub const TOO_MANY_REQUESTS: &str = "Too many requests";

/// Which account request named an account the connection does not have (the words after
/// "Unknown account specified").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountOp {
    /// `session-create` and the not-yet-supported account requests.
    Any,
    /// `account-remove`.
    Remove,
    /// `account-register`.
    Register,
    /// `account-unregister`.
    Unregister,
    /// `account-devicetoken`.
    Token,
}

/// Why an account request (or the account check of a session request) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// `account-add` for an account the connection has.
    AccountExists { account: String },
    /// `account-add` beyond `Config::max_accounts_per_connection`.
    TooManyAccounts,
    /// `account-add` for a domain outside `Config::sip_domains`.
    DomainNotAllowed { domain: String },
    /// A request naming an account the connection has not added.
    UnknownAccount { account: String, op: AccountOp },
    /// An addressbook or messaging request for an account never registered on this connection.
    NotAuthenticated,
    /// A valid request of a feature sylkgw does not provide.
    NotSupported { kind: &'static str },
    /// A request routed to the wrong layer (a bug).
    Internal,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AccountExists { account } => write!(f, "Account {account} already added"),
            Self::TooManyAccounts => f.write_str(TOO_MANY_ACCOUNTS),
            Self::DomainNotAllowed { domain } => write!(f, "SIP domain not allowed: {domain}"),
            Self::UnknownAccount { account, op } => {
                let what = match op {
                    AccountOp::Any => "",
                    AccountOp::Remove => " for remove",
                    AccountOp::Register => " for register",
                    AccountOp::Unregister => " for unregister",
                    AccountOp::Token => " for token",
                };
                write!(f, "Unknown account specified{what}: {account}")
            }
            Self::NotAuthenticated => f.write_str("Account not authenticated"),
            Self::NotSupported { kind } => write!(f, "{kind} is not supported yet"),
            Self::Internal => f.write_str("Internal error"),
        }
    }
}

impl std::error::Error for ClientError {}

/// What is wrong with an SDP a party sent (the text after "Invalid SDP: ").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpProblem {
    /// Our parser could not read it.
    Parse(SdpError),
    /// No audio m-line in use.
    NoAudio,
    /// The browser's offer has none of the audio codecs we carry.
    NoSupportedAudioCodec,
    /// The browser's answer kept none of the offered audio codecs.
    NoCommonCodec,
    /// The browser leg (str0m) refused it.
    Browser(WebRtcError),
}

impl fmt::Display for SdpProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Invalid SDP: ")?;
        match self {
            Self::Parse(e) => f.write_str(e.as_str()),
            Self::NoAudio => f.write_str("no audio stream"),
            Self::NoSupportedAudioCodec => f.write_str("no supported audio codec (Opus, G722, PCMU, PCMA)"),
            Self::NoCommonCodec => f.write_str("no common codec"),
            Self::Browser(e) => write!(f, "{e}"),
        }
    }
}

/// A session request whose state check failed (SylkServer words each differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOp {
    /// `session-answer`.
    Answer,
    /// `session-update`.
    Update,
    /// `session-dtmf-info`.
    DtmfInfo,
    /// `session-message`.
    Message,
}

/// What the media plane lacks for a new call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaShortage {
    /// No DTLS certificate configured.
    NoDtlsCertificate,
    /// The runtime has not bound the WebRTC socket.
    NoWebRtcSocket,
    /// Every RTP port pair is in use.
    NoPorts,
}

/// The `error` for an `account-register` whose next hop did not resolve (spec §2.2): the
/// resolver's `detail`, or SylkServer's "no results found" for an empty answer.
pub fn dns_lookup_error(detail: Option<&str>) -> String {
    format!("DNS lookup error: {}", detail.unwrap_or("no results found"))
}

/// Why a session request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// No session with that id on this connection.
    UnknownSession { session: String },
    /// `session-create` with an id in use.
    SessionInUse { session: String },
    /// `session-create` beyond `Config::max_sessions_per_connection`.
    TooManySessions,
    /// The request's SDP cannot be used.
    InvalidSdp(SdpProblem),
    /// The session's state does not allow the request; `state` is SylkServer's state name.
    InvalidState { session: String, op: SessionOp, state: &'static str },
    /// The request needs the SIP dialog, which does not exist (yet).
    NoDialog { session: String, op: SessionOp },
    /// `session-answer` for a call the browser placed.
    AnswerOutgoing { session: String },
    /// The media plane cannot take a call.
    MediaUnavailable(MediaShortage),
    /// `session-dtmf-info` with more than `max` characters in `digit`.
    TooManyDigits { max: usize },
    /// A session request of a feature sylkgw does not provide yet (`session-message`), answered
    /// as the other such requests ([`ClientError::NotSupported`]).
    NotSupported { kind: &'static str },
    /// A `session-message` whose content cannot be sent (`messaging::outgoing`).
    BadMessage { why: String },
    /// A state the layer does not expect (a bug); logged, answered as SylkServer does.
    Internal,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownSession { session } => write!(f, "Unknown session {session}"),
            Self::SessionInUse { session } => write!(f, "Session ID {session} already in use"),
            Self::TooManySessions => f.write_str(TOO_MANY_SESSIONS),
            Self::InvalidSdp(problem) => write!(f, "{problem}"),
            Self::InvalidState { session, op: SessionOp::Answer, state } => {
                write!(f, "Invalid state for answering session {session}: {state}")
            }
            Self::InvalidState { session, op: SessionOp::Update, state } => {
                write!(f, "Invalid state for updating session {session}: {state}")
            }
            Self::InvalidState { session, op: SessionOp::DtmfInfo, state } => {
                write!(f, "Invalid state session {session}: {state} for DTMF info")
            }
            Self::InvalidState { session, op: SessionOp::Message, state } => {
                write!(f, "Invalid state session {session}: {state} for sending messages")
            }
            Self::NoDialog { session, op: SessionOp::Update } => {
                write!(f, "Invalid state for updating session {session}: no dialog")
            }
            Self::NoDialog { session, .. } => write!(f, "Invalid state session {session}: no dialog"),
            Self::AnswerOutgoing { session } => write!(f, "Cannot answer outgoing session {session}"),
            Self::MediaUnavailable(MediaShortage::NoDtlsCertificate) => {
                f.write_str("Media is not available (no DTLS certificate)")
            }
            Self::MediaUnavailable(MediaShortage::NoWebRtcSocket) => {
                f.write_str("Media is not available (no WebRTC socket)")
            }
            Self::MediaUnavailable(MediaShortage::NoPorts) => f.write_str("No media ports available"),
            Self::TooManyDigits { max } => write!(f, "Too many DTMF digits: at most {max} per request"),
            Self::NotSupported { kind } => write!(f, "{}", ClientError::NotSupported { kind }),
            Self::BadMessage { why } => write!(f, "Invalid message: {why}"),
            Self::Internal => f.write_str("Internal error"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<SdpProblem> for CallError {
    fn from(problem: SdpProblem) -> Self {
        Self::InvalidSdp(problem)
    }
}

/// Why the SIP peer's answer (outgoing calls) cannot be used; the call ends with this as the
/// `terminated` reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// The answer's SDP cannot be read or has no audio.
    InvalidSdp(SdpProblem),
    /// No common codec, unacceptable crypto, or the browser's offer cannot be answered with it.
    NotAcceptable,
    /// The call ended meanwhile.
    Gone,
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidSdp(problem) => write!(f, "{problem}"),
            Self::NotAcceptable => f.write_str("488 Not Acceptable Here"),
            Self::Gone => f.write_str("gone"),
        }
    }
}

impl std::error::Error for AnswerError {}

impl From<SdpProblem> for AnswerError {
    fn from(problem: SdpProblem) -> Self {
        Self::InvalidSdp(problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_sylkservers() {
        let s = || "S".to_string();
        let cases: [(&dyn fmt::Display, &str); 12] = [
            (
                &ClientError::UnknownAccount { account: "a@x".into(), op: AccountOp::Any },
                "Unknown account specified: a@x",
            ),
            (
                &ClientError::UnknownAccount { account: "a@x".into(), op: AccountOp::Register },
                "Unknown account specified for register: a@x",
            ),
            (&ClientError::NotSupported { kind: "session-message" }, "session-message is not supported yet"),
            (&CallError::UnknownSession { session: s() }, "Unknown session S"),
            (
                &CallError::InvalidState { session: s(), op: SessionOp::DtmfInfo, state: "connecting" },
                "Invalid state session S: connecting for DTMF info",
            ),
            (&CallError::NoDialog { session: s(), op: SessionOp::DtmfInfo }, "Invalid state session S: no dialog"),
            (
                &CallError::NoDialog { session: s(), op: SessionOp::Update },
                "Invalid state for updating session S: no dialog",
            ),
            (
                &CallError::InvalidState { session: s(), op: SessionOp::Answer, state: "accepted" },
                "Invalid state for answering session S: accepted",
            ),
            (&CallError::InvalidSdp(SdpProblem::Parse(SdpError::Syntax)), "Invalid SDP: SDP syntax"),
            (&CallError::MediaUnavailable(MediaShortage::NoPorts), "No media ports available"),
            (&AnswerError::NotAcceptable, "488 Not Acceptable Here"),
            (&AnswerError::InvalidSdp(SdpProblem::NoAudio), "Invalid SDP: no audio stream"),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
        assert_eq!(dns_lookup_error(Some("timed out")), "DNS lookup error: timed out");
        assert_eq!(dns_lookup_error(None), "DNS lookup error: no results found");
    }
}
