//! One sylkRTC session (a 1:1 call) as the gateway holds it: which connection and account it
//! belongs to, its server-side state (spec `sylkrtc-protocol.md` §4.1), its SIP leg (by id, in
//! the SIP stack), its browser leg (str0m) and its SIP-side media. The gateway's call layer
//! (`gateway/calls.rs`) drives it; this module holds the data and the pure decisions.

use crate::ids::{ConnId, SocketId};
use crate::media::bridge::SipMedia;
use crate::media::sdp::{Codec, LocalMedia, SdpVersioner};
use crate::media::webrtc::BrowserLeg;
use crate::sip::calls::LegId;
use std::fmt;
use std::net::SocketAddr;

/// A call's handle in the gateway (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call{}", self.0)
    }
}

/// What the media plane decided about a call. Media is left out of captures, so these are
/// recorded instead (`call:N media <event>`), and a replay feeds them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE and DTLS came up with the browser (`established`).
    Connected,
    /// The browser leg closed (DTLS close, or an error in str0m).
    Closed,
    /// No media from the SIP side for `media_timeout`.
    Timeout,
}

impl MediaEvent {
    /// Its name in captures.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Closed => "closed",
            Self::Timeout => "timeout",
        }
    }

    /// The event named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Connected, Self::Closed, Self::Timeout].into_iter().find(|e| e.name() == name)
    }
}

/// Who placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `session-create`: the browser calls a SIP URI.
    Outgoing,
    /// An INVITE for one of the connection's registered accounts.
    Incoming,
}

/// The server-side session state (spec §4.1); it decides which requests are allowed. Its names
/// are SylkServer's, as they appear in its error strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Outgoing: waiting for the RTP pair before the INVITE. Incoming: offered to the browser.
    Connecting,
    /// Outgoing: the INVITE is out.
    Progress,
    /// Outgoing: a provisional response with SDP was the browser's answer.
    EarlyMedia,
    /// Answered (200 received, or our 200 sent).
    Accepted,
    /// ICE and DTLS are up with the browser, after the answer.
    Established,
    /// Our re-INVITE (the browser's `session-update` offer) is out.
    LocalUpdating,
    /// The SIP peer's re-INVITE waits for the browser's `session-update` answer.
    RemoteUpdating,
}

impl State {
    /// SylkServer's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Progress => "progress",
            Self::EarlyMedia => "early_media",
            Self::Accepted => "accepted",
            Self::Established => "established",
            Self::LocalUpdating => "local-updating",
            Self::RemoteUpdating => "remote-updating",
        }
    }

    /// Whether `session-terminate` may end the call (every live state, spec §2.3).
    pub fn can_terminate(self) -> bool {
        true
    }

    /// Whether `session-dtmf-info` may send INFO (spec §2.3).
    pub fn can_send_dtmf(self) -> bool {
        matches!(
            self,
            Self::Established | Self::Accepted | Self::EarlyMedia | Self::LocalUpdating | Self::RemoteUpdating
        )
    }
}

/// The RTP/RTCP socket pair of the call's SIP leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPair {
    /// The RTP socket (RTCP is the next id).
    pub rtp: SocketId,
    /// The RTCP socket.
    pub rtcp: SocketId,
    /// Our RTP port once both sockets are bound.
    pub port: Option<u16>,
}

impl RtpPair {
    /// A pair being bound.
    pub fn new(rtp: SocketId, rtcp: SocketId) -> Self {
        Self { rtp, rtcp, port: None }
    }
}

/// One m-line of the call's SIP-side session, in order: what our offers and answers write there
/// (RFC 3264 §6, §8: an answer has the offer's m-lines in its order, and a later offer keeps them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// The audio line.
    Audio,
    /// The video line ([`VideoLine`]; port 0 once refused).
    Video,
    /// A line we refuse (port 0), as written.
    Reject(LocalMedia),
}

/// The call's video on the SIP side (media spec §2.3): its own RTP/RTCP pair from `--rtp-ports`,
/// its own codecs, crypto and [`SipMedia`]. Once refused (by the SIP side, the browser, or a
/// later SDP with port 0) it stays refused: the line is written with port 0 from then on.
#[derive(Debug)]
pub struct VideoLine {
    /// The video RTP/RTCP pair (released with the call).
    pub rtp: RtpPair,
    /// The video codecs offered to the SIP side (outgoing: the browser's at its numbers;
    /// incoming: the SIP peer's at its numbers), narrowed to VP8 and H.264.
    pub offered: Vec<Codec>,
    /// Incoming: the SIP peer's video RTP address from its offer.
    pub offer_addr: Option<SocketAddr>,
    /// `None` until an answer decided; then whether video is in use.
    pub accepted: Option<bool>,
    /// The SIP side's video media once accepted.
    pub media: Option<SipMedia>,
    /// Incoming: the video codecs of our SIP answer (at the peer's numbers).
    pub answer_codecs: Vec<Codec>,
    /// The video line's transport profile: `RTP/AVP`, or `RTP/SAVP` with SDES.
    pub proto: crate::media::sdp::Proto,
    /// Our `a=crypto` lines of the video line (offered, or the one answered).
    pub local_crypto: Vec<crate::media::srtp::CryptoAttribute>,
    /// The peer's `a=crypto` of the video line in use.
    pub remote_crypto: Option<crate::media::srtp::CryptoAttribute>,
    /// `a=rtcp-fb` and RTX of the line at the SIP side's numbers (`sip_video_fb`): what our SDP
    /// writes, and once answered what the media honours.
    pub feedback: crate::media::sip_video_fb::VideoFeedback,
}

impl VideoLine {
    /// A video line on `rtp` offering `offered`.
    pub fn new(rtp: RtpPair, offered: Vec<Codec>) -> Self {
        Self {
            rtp,
            offered,
            offer_addr: None,
            accepted: None,
            media: None,
            answer_codecs: Vec::new(),
            proto: crate::media::sdp::Proto::RtpAvp,
            local_crypto: Vec::new(),
            remote_crypto: None,
            feedback: Default::default(),
        }
    }

    /// True unless refused.
    pub fn is_open(&self) -> bool {
        self.accepted != Some(false)
    }

    /// Refuses video for the rest of the call (media stops).
    pub fn refuse(&mut self) {
        self.accepted = Some(false);
        self.media = None;
    }

    /// The codecs our SDP writes on the line, at the SIP side's numbers: the negotiated ones,
    /// else those of our answer, else those offered.
    pub fn sip_codecs(&self) -> Vec<Codec> {
        if let Some(m) = &self.media {
            return m.codecs().iter().map(|p| Codec { pt: p.sip_pt, ..p.codec.clone() }).collect();
        }
        if !self.answer_codecs.is_empty() {
            return self.answer_codecs.clone();
        }
        self.offered.clone()
    }
}

/// What waits for the RTP pair to be bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Nothing.
    None,
    /// Outgoing: the INVITE to `uri` with `headers`.
    Invite { uri: String, headers: Vec<(String, String)> },
    /// Incoming: the 200 OK (the browser answered before the pair was bound).
    Answer,
}

/// One call.
pub struct Call {
    /// The WebSocket it belongs to.
    pub conn: ConnId,
    /// The sylkRTC session id (the client's for outgoing calls; MD5 of the Call-ID for incoming).
    pub session: String,
    /// The account (AOR).
    pub account: String,
    /// Who called.
    pub origin: Origin,
    /// Server-side state.
    pub state: State,
    /// The SIP leg, once the INVITE went out (outgoing) or from the start (incoming).
    pub leg: Option<LegId>,
    /// The SIP Call-ID, once known (for `early-media`/`accepted`).
    pub call_id: Option<String>,
    /// The browser leg.
    pub browser: BrowserLeg,
    /// Outgoing: the browser's offer, kept until the first SIP answer is applied.
    pub browser_offer: Option<String>,
    /// The codecs the SIP side was offered (outgoing: the browser's, at the browser's numbers;
    /// incoming: the SIP peer's offer, at its numbers), already narrowed to what we carry.
    pub offered: Vec<Codec>,
    /// Incoming: the SIP peer's RTP address from its offer.
    pub offer_addr: Option<SocketAddr>,
    /// Outgoing: an SDP was sent to the browser (`early-media` or `accepted` with `sdp`).
    pub browser_answered: bool,
    /// The SIP leg's sockets.
    pub rtp: RtpPair,
    /// The SIP side's media once an answer is known.
    pub media: Option<SipMedia>,
    /// Our `o=` line on the SIP side.
    pub sdp: SdpVersioner,
    /// What waits for the RTP pair.
    pub pending: Pending,
    /// ICE and DTLS are up with the browser (`established` was sent).
    pub ice_up: bool,
    /// Incoming: the SIP answer (our codecs at the peer's numbers) to send once the pair is bound.
    pub answer_codecs: Vec<Codec>,
    /// Our re-INVITE is out: the answer the browser got for its offer, for `update accepted`.
    pub pending_update: Option<String>,
    /// The SIP side's transport profile: `RTP/AVP`, or `RTP/SAVP` with SDES.
    pub sip_proto: crate::media::sdp::Proto,
    /// Our `a=crypto` lines on the SIP side (offered, or the one answered), with our keys.
    pub local_crypto: Vec<crate::media::srtp::CryptoAttribute>,
    /// The peer's `a=crypto` in use (its key for what it sends).
    pub remote_crypto: Option<crate::media::srtp::CryptoAttribute>,
    /// Incoming: the `session-answer` headers for our 200.
    pub answer_headers: Vec<(String, String)>,
    /// Incoming: the caller, for `missed-session`.
    pub originator: Option<crate::api::Identity>,
    /// The video line, when the call has one (browser or SIP offer with video). Boxed: it holds
    /// a whole `SipMedia`, which an audio call would otherwise carry empty (issue #14).
    pub video: Option<Box<VideoLine>>,
    /// The m-lines of the SIP-side session, in order (`[Audio]` for audio-only calls).
    pub layout: Vec<Slot>,
    /// Incoming late offer (an INVITE without SDP): our 200 offers, the ACK answers.
    pub late_offer: bool,
    /// The deadline the call's browser timer was last armed for by its drain (the gateway's
    /// timer table holds it; kept here so that the drain after every packet, which mostly finds
    /// it earlier than str0m's next deadline, does not look it up there: issue #14).
    pub browser_timer: Option<std::time::Instant>,
}

impl Call {
    /// Whether every RTP pair of the call (audio, video) is bound.
    pub fn pairs_bound(&self) -> bool {
        self.rtp.port.is_some() && self.video.as_ref().is_none_or(|v| v.rtp.port.is_some() || !v.is_open())
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("conn", &self.conn)
            .field("session", &self.session)
            .field("origin", &self.origin)
            .field("state", &self.state)
            .field("leg", &self.leg)
            .finish_non_exhaustive()
    }
}

/// The codecs the gateway carries between the two sides, in our preference order (media spec
/// §2.3 point 2): Opus, G.722, PCMU, PCMA and telephone-event/8000. PTs here are placeholders:
/// [`crate::media::sdp::intersect`] keeps the offer's.
pub fn supported_codecs() -> [Codec; 5] {
    [Codec::opus(111), Codec::g722(), Codec::pcmu(), Codec::pcma(), Codec::telephone_event(101)]
}

/// The video codecs the gateway carries between the two sides: VP8 and H.264 (each H.264
/// format is paired by packetization mode and profile, [`Codec::same_format`]). PTs are
/// placeholders, as in [`supported_codecs`].
pub fn supported_video_codecs() -> [Codec; 2] {
    [Codec::vp8(96), Codec::h264(97, None)]
}

/// The session id of an incoming call: the MD5 of its Call-ID in UUID layout (8-4-4-4-12), as
/// SylkServer makes it.
pub fn incoming_session_id(call_id: &str) -> String {
    use md5::{Digest, Md5};
    let h = Md5::digest(call_id.as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The `headers` of `incoming-session`: every SIP header whose name starts with one of the
/// account's `incoming_header_prefixes` (case-insensitive), first value of each name.
pub fn filter_headers(headers: &[(String, String)], prefixes: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let wanted = prefixes.iter().any(|p| {
            !p.is_empty() && name.len() >= p.len() && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
        });
        if wanted && !out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            out.push((name.clone(), value.clone()));
        }
    }
    out
}

/// Headers a client may never set, even when `Config::allowed_client_headers` lists them:
/// identity (a proxy may trust it), routing, auth, extensions the stack must agree to, and the
/// stack's own (dialog, framing). `Content-*` (the body's) is refused by prefix, and every
/// one-letter name (the compact forms, RFC 3261 §7.3.3) too.
const REFUSED_HEADERS: [&str; 25] = [
    // Identity (RFC 3325, RFC 8224, draft-ietf-sip-privacy).
    "p-asserted-identity",
    "p-preferred-identity",
    "identity",
    "remote-party-id",
    // Routing.
    "route",
    "record-route",
    "via",
    "path",
    "service-route",
    // Auth (RFC 3261 §22).
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "proxy-authenticate",
    "authentication-info",
    // Extensions (RFC 3261 §20.32, §20.29, §20.37).
    "require",
    "proxy-require",
    "supported",
    // The stack's own.
    "from",
    "to",
    "call-id",
    "cseq",
    "contact",
    "max-forwards",
    "allow",
    "expires",
];

/// Whether a client header named `name` (already a token) is refused whatever the config says.
fn refused_header(name: &str) -> bool {
    let content = name.len() >= 8 && name.as_bytes()[..8].eq_ignore_ascii_case(b"content-");
    name.len() == 1 || content || REFUSED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// The sylkRTC `headers` that may go into a SIP request or response (an allowlist): names
/// that are RFC 3261 tokens and either start with `X-` or are in `allowed`
/// (`Config::allowed_client_headers`, case-insensitive), and are not [`refused_header`]s. The
/// rest is dropped (and logged), so a client cannot inject header lines, claim an identity,
/// route, authenticate or break the dialog.
pub fn custom_headers(headers: Vec<(String, String)>, allowed: &[String]) -> Vec<(String, String)> {
    headers
        .into_iter()
        .filter(|(name, _)| {
            let token =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
            let x = name.len() > 2 && name.as_bytes()[..2].eq_ignore_ascii_case(b"x-");
            let listed = allowed.iter().any(|a| a.eq_ignore_ascii_case(name));
            let ok = token && (x || listed) && !refused_header(name);
            if !ok {
                log::info!("header {name:?} from the client dropped");
            }
            ok
        })
        .collect()
}

/// Most characters of one `session-dtmf-info` `digit` (SylkServer's clients send what the user
/// typed at once; Janus took a single digit). One INFO goes out per digit.
pub const MAX_DTMF_DIGITS: usize = 32;

/// The INFO body for one DTMF digit (`application/dtmf-relay`, as Janus sends it); `duration` in
/// ms, 160 when absent or outside 1..=5000 (spec §5.4).
pub fn dtmf_relay_body(digit: char, duration: Option<i64>) -> Vec<u8> {
    let d = duration.filter(|d| (1..=5000).contains(d)).unwrap_or(160);
    format!("Signal={digit}\r\nDuration={d}\r\n").into_bytes()
}

/// Whether `c` is a DTMF digit INFO may carry.
pub fn is_dtmf_digit(c: char) -> bool {
    c.is_ascii_digit() || matches!(c.to_ascii_uppercase(), '*' | '#' | 'A' | 'B' | 'C' | 'D')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_is_md5_of_call_id_in_uuid_layout() {
        // md5("abc") = 900150983cd24fb0d6963f7d28e17f72
        assert_eq!(incoming_session_id("abc"), "90015098-3cd2-4fb0-d696-3f7d28e17f72");
    }

    #[test]
    fn headers_filtered_by_prefix() {
        let h = [
            ("X-Foo".to_string(), "1".to_string()),
            ("Via".to_string(), "v".to_string()),
            ("x-foo".to_string(), "2".to_string()),
            ("X-Bar".to_string(), "3".to_string()),
        ];
        let got = filter_headers(&h, &["x-".to_string()]);
        assert_eq!(got, [("X-Foo".to_string(), "1".to_string()), ("X-Bar".to_string(), "3".to_string())]);
        assert!(filter_headers(&h, &[]).is_empty());
    }

    fn h(n: &str) -> (String, String) {
        (n.to_string(), "v".to_string())
    }

    #[test]
    fn custom_headers_cannot_inject() {
        let got = custom_headers(vec![h("X-Ok"), h("Via"), h("x\r\nVia"), h(""), h("call-id"), h("X-\r\nVia")], &[]);
        assert_eq!(got, [h("X-Ok")]);
    }

    #[test]
    fn custom_headers_are_an_allowlist() {
        // Without configuration only X- headers pass (any case).
        let got = custom_headers(vec![h("X-Account"), h("x-lower"), h("Subject"), h("Priority"), h("X")], &[]);
        assert_eq!(got, [h("X-Account"), h("x-lower")]);
        // Configured names pass, case-insensitively.
        let allowed = ["subject".to_string(), "Priority".to_string()];
        let got = custom_headers(vec![h("Subject"), h("PRIORITY"), h("Organization")], &allowed);
        assert_eq!(got, [h("Subject"), h("PRIORITY")]);
    }

    #[test]
    fn custom_headers_refused_even_when_listed() {
        let refused = [
            // identity
            "P-Asserted-Identity",
            "P-Preferred-Identity",
            "Identity",
            "Remote-Party-ID",
            // routing
            "Route",
            "Record-Route",
            "Via",
            "Path",
            "Service-Route",
            // auth
            "Authorization",
            "Proxy-Authorization",
            "WWW-Authenticate",
            "Proxy-Authenticate",
            // extensions the stack must agree to
            "Require",
            "Proxy-Require",
            "Supported",
            // body
            "Content-Encoding",
            "Content-Type",
            "Content-Length",
            "Content-Disposition",
            "Content-Language",
            // the stack's own
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Contact",
            "Max-Forwards",
            // compact forms (RFC 3261 §7.3.3 and later: i, m, e, l, c, f, k, t, v, …)
            "e",
            "k",
            "v",
        ];
        let listed: Vec<String> = refused.iter().map(|n| n.to_ascii_lowercase()).collect();
        let got = custom_headers(refused.iter().map(|n| h(n)).collect(), &listed);
        assert!(got.is_empty(), "{got:?}");
        // Refused in any case, and an X- header is still fine next to them.
        let got = custom_headers(vec![h("p-asserted-identity"), h("CONTENT-ENCODING"), h("X-Fine")], &listed);
        assert_eq!(got, [h("X-Fine")]);
    }

    #[test]
    fn dtmf_body() {
        assert_eq!(dtmf_relay_body('5', None), b"Signal=5\r\nDuration=160\r\n");
        assert_eq!(dtmf_relay_body('#', Some(250)), b"Signal=#\r\nDuration=250\r\n");
        assert_eq!(dtmf_relay_body('1', Some(0)), b"Signal=1\r\nDuration=160\r\n");
        assert!(is_dtmf_digit('*') && is_dtmf_digit('d') && !is_dtmf_digit('x'));
    }
}
