//! What the SIP stack says to the outside: the handles of registrations and call legs, the
//! [`SipEvent`]s the transaction user hears and the [`SipOutput`]s the runtime carries out.
//! Plain data: every machine in `sip/` may name these, and none of them imports the stack.

use super::invite::CallProgress;
use super::registration::RegState;
use super::transport::TransportOut;
use crate::dns::QueryType;

/// A registration's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegId(pub u64);

/// A call leg's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LegId(pub u64);

/// An outgoing MESSAGE's handle (RFC 3428).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId(pub u64);

/// An incoming MESSAGE waiting for the transaction user's answer (`SipStack::answer_message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboundMsgId(pub u64);

/// Which of a leg's requests a client transaction carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegTx {
    /// The INVITE (or its authenticated retry).
    Invite,
    /// The CANCEL.
    Cancel,
    /// A BYE.
    Bye,
    /// An INFO in the dialog.
    Info,
    /// A re-INVITE in the dialog.
    Reinvite,
    /// A PRACK for a reliable provisional response (RFC 3262 §4).
    Prack,
}

/// Why an INFO was not taken (`SipStack::try_send_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoError {
    /// The leg has no established dialog (not answered yet, closing, or no such leg).
    NoDialog,
    /// `MAX_QUEUED_INFOS` INFOs already wait behind the one in flight; nothing was queued.
    QueueFull,
}

impl std::fmt::Display for InfoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InfoError::NoDialog => "no established dialog",
            InfoError::QueueFull => "too many INFO requests queued",
        })
    }
}

impl std::error::Error for InfoError {}

/// What the stack asks the runtime for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipOutput {
    /// Transport work.
    Transport(TransportOut),
    /// Look `name` up for records of type `qtype`; answer with `SipStack::handle_resolved`.
    Resolve { query: u64, qtype: QueryType, name: String },
}

/// What the transaction user hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipEvent {
    /// A registration changed state.
    Registration { id: RegId, state: RegState },
    /// A registration's next hop was resolved (RFC 3263), before its REGISTER goes out: `Err`
    /// with the resolver's error (`None`: no records) when nothing resolved; a 503 `Failed`
    /// follows then.
    Resolved { id: RegId, result: Result<(), Option<String>> },
    /// A call progressed (outgoing, or an incoming one after [`SipEvent::Incoming`]).
    Call { leg: LegId, progress: CallProgress },
    /// An INVITE for the Contact of registration `reg`; answer with `SipStack::answer` or
    /// `SipStack::decline`. A 180 Ringing has been sent.
    Incoming { leg: LegId, reg: RegId, call: IncomingCall },
    /// An INFO arrived in the dialog of a call (answered 200 already; RFC 6086 legacy usage,
    /// e.g. `application/dtmf-relay`).
    Info { leg: LegId, content_type: String, body: Vec<u8> },
    /// The peer sent a new offer in the established call: a re-INVITE (RFC 3261 §14.2) or an
    /// UPDATE (RFC 3311) with SDP. Answer with `SipStack::answer_reoffer`. `sdp` is empty for a
    /// re-INVITE without SDP (late offer): then pass our offer, and the answer arrives as
    /// [`SipEvent::ReofferAck`]. A 100 Trying has been sent for a re-INVITE.
    Reoffer { leg: LegId, sdp: Vec<u8> },
    /// The ACK for our 2xx to a late-offer re-INVITE, or to an incoming INVITE without SDP
    /// (late offer, RFC 3261 §13.2.1: our 2xx offered), carried the peer's answer.
    ReofferAck { leg: LegId, sdp: Vec<u8> },
    /// The outcome of `SipStack::reinvite`: the answer SDP of the 2xx (empty if it had none),
    /// or `"<code> <phrase>"` (the session is unchanged, RFC 3261 §14.1). A 481 or 408 is
    /// followed by the call's [`SipEvent::Call`] `Ended` (§12.2.1.2).
    ReinviteResult { leg: LegId, result: Result<Vec<u8>, String> },
    /// The final outcome of `SipStack::send_message` or `SipStack::send_message_in_dialog`:
    /// the final response's code and reason, 408 when it timed out, 503 when the next hop could
    /// not be resolved or reached (or too many transactions were in flight).
    MessageResult { id: MsgId, code: u16, reason: String },
    /// A MESSAGE (RFC 3428 §7) outside any dialog for the Contact of registration `reg`.
    /// Answer with `SipStack::answer_message` (200 delivered, 202 accepted for later, or an
    /// error); unanswered, the stack answers 480 after `MESSAGE_ANSWER_WAIT`.
    Message { id: InboundMsgId, reg: RegId, message: IncomingMessage },
    /// A MESSAGE inside a call's dialog (answered 200 already).
    DialogMessage { leg: LegId, message: IncomingMessage },
}

/// What the transaction user learns of an incoming MESSAGE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// The sender's URI without scheme (`bob@example.com`).
    pub from_uri: String,
    /// The sender's display name.
    pub display_name: Option<String>,
    /// The To URI without scheme (the account's AoR as the sender wrote it).
    pub to_uri: String,
    /// The SIP Call-ID.
    pub call_id: String,
    /// `Content-Type` (empty if absent).
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
    /// Every header, for the TU's filters.
    pub headers: Vec<(String, String)>,
}

/// What the transaction user learns of an incoming call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// The caller's URI without scheme (`bob@example.com`).
    pub from_uri: String,
    /// The caller's display name.
    pub display_name: Option<String>,
    /// The SIP Call-ID.
    pub call_id: String,
    /// The SDP offer (empty for a late-offer INVITE).
    pub sdp: Vec<u8>,
    /// Every header, for the TU's `incoming_header_prefixes` filter.
    pub headers: Vec<(String, String)>,
}
