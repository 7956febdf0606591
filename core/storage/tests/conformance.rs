//! The one conformance suite: every check below runs against SQLite and against a real
//! PostgreSQL server (started by the harness), through the same `Storage` interface.

mod common;

use serde_json::json;
use sylkgw_core::storage::{
    AccountInfo, AddOutcome, Addressbook, AddressbookAction, AddressbookKind, Direction, HistoryAnswer, JournalEntry,
    JournalStamp, MessageState, NewMessage, RemoveSide, StoreError, StoreRequest, StoreResult, UnixMicros,
};
use sylkgw_storage::schema::{Migration, MIGRATIONS};
use sylkgw_storage::Storage;

use common::Fixture;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

/// Generates, for each check, `sqlite::<check>` and `postgres::<check>`.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $check() { super::$check(&crate::common::SqliteFixture::new()) })*
        }
        mod postgres {
            $(#[test] fn $check() { super::$check(&crate::common::PgFixture::new()) })*
        }
    };
}

conformance!(
    addressbook_holds_at_most_max_items,
    messages_replay_in_stored_order_with_every_field,
    a_known_message_id_is_not_journaled_twice,
    paging_by_message_id_then_since_then_all,
    paging_after_a_removed_message_still_works,
    state_updates_follow_sylkserver,
    mark_read_clears_dispositions_and_keeps_one_marker,
    remove_message_on_the_sender_side,
    remove_message_on_the_receiver_side,
    remove_conversation_drops_every_entry_with_the_contact,
    trim_keeps_the_newest_entries,
    public_keys_are_stored_not_journaled,
    offline_storage_needs_a_known_account,
    history_needs_the_unexpired_token,
    addressbook_add_update_delete,
    accounts_do_not_see_each_other,
    two_connections_see_each_others_writes,
    text_survives_byte_for_byte,
    an_old_schema_is_migrated_and_a_newer_one_refused,
    a_failed_request_changes_nothing,
);

fn message(account: &str, contact: &str, id: &str, direction: Direction, at: i64) -> NewMessage {
    NewMessage {
        account: account.into(),
        contact: contact.into(),
        direction: Some(direction),
        content_type: "text/plain".into(),
        content: format!("hello {id}"),
        message_id: id.into(),
        timestamp: format!("2026-01-01T00:00:{:02}.000Z", at % 60),
        disposition: vec!["positive-delivery".into(), "display".into()],
        state: Some(if direction == Direction::Outgoing { MessageState::Pending } else { MessageState::Received }),
        created_at: UnixMicros(at),
    }
}

fn stamp(id: &str, at: i64) -> JournalStamp {
    JournalStamp { message_id: id.into(), created_at: UnixMicros(at), timestamp: format!("ts-{at}") }
}

fn ok(store: &mut dyn Storage, request: StoreRequest) -> StoreResult {
    store.execute(&request).unwrap_or_else(|e| panic!("{request:?}: {e}"))
}

fn add(store: &mut dyn Storage, m: NewMessage) -> AddOutcome {
    match ok(store, StoreRequest::AddMessage { message: m, require_account: false }) {
        StoreResult::Added { outcome } => outcome,
        other => panic!("AddMessage answered {other:?}"),
    }
}

fn journal(
    store: &mut dyn Storage,
    account: &str,
    id: Option<&str>,
    since: Option<i64>,
    limit: Option<u32>,
) -> Vec<JournalEntry> {
    let request = StoreRequest::Journal {
        account: account.into(),
        message_id: id.map(str::to_string),
        since: since.map(UnixMicros),
        limit,
    };
    match ok(store, request) {
        StoreResult::Journal { entries } => entries,
        other => panic!("Journal answered {other:?}"),
    }
}

fn ids(entries: &[JournalEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.message_id.as_str()).collect()
}

fn all_ids(store: &mut dyn Storage, account: &str) -> Vec<String> {
    journal(store, account, None, None, None).into_iter().map(|e| e.message_id).collect()
}

fn messages_replay_in_stored_order_with_every_field(f: &dyn Fixture) {
    let mut s = f.open();
    // Stored order is the order of storing, not of created_at.
    assert_eq!(add(&mut *s, message(ALICE, BOB, "m1", Direction::Outgoing, 30)), AddOutcome::Journaled);
    assert_eq!(add(&mut *s, message(ALICE, BOB, "m2", Direction::Incoming, 10)), AddOutcome::Journaled);
    assert_eq!(add(&mut *s, message(ALICE, CAROL, "m3", Direction::Outgoing, 20)), AddOutcome::Journaled);
    let entries = journal(&mut *s, ALICE, None, None, None);
    assert_eq!(ids(&entries), ["m1", "m2", "m3"]);
    assert_eq!(
        entries[1],
        JournalEntry {
            contact: BOB.into(),
            timestamp: "2026-01-01T00:00:10.000Z".into(),
            disposition: vec!["positive-delivery".into(), "display".into()],
            message_id: "m2".into(),
            content_type: "text/plain".into(),
            content: "hello m2".into(),
            direction: Some(Direction::Incoming),
            state: Some(MessageState::Received),
            created_at: UnixMicros(10),
        }
    );
    assert_eq!(journal(&mut *s, ALICE, None, None, Some(2)).len(), 2);
    assert_eq!(journal(&mut *s, ALICE, None, None, Some(0)).len(), 0);
    assert!(journal(&mut *s, "nobody@example.com", None, None, None).is_empty());
}

fn a_known_message_id_is_not_journaled_twice(f: &dyn Fixture) {
    let mut s = f.open();
    add(&mut *s, message(ALICE, BOB, "m1", Direction::Outgoing, 1));
    let mut again = message(ALICE, BOB, "m1", Direction::Outgoing, 2);
    again.content = "changed".into();
    assert_eq!(add(&mut *s, again), AddOutcome::Duplicate);
    let mut imdn = message(ALICE, BOB, "m1", Direction::Incoming, 3);
    imdn.content_type = "message/imdn+json".into();
    assert_eq!(add(&mut *s, imdn), AddOutcome::Duplicate);
    let entries = journal(&mut *s, ALICE, None, None, None);
    assert_eq!(ids(&entries), ["m1"]);
    assert_eq!(entries[0].content, "hello m1");
    // The same id for another account is that account's own.
    assert_eq!(add(&mut *s, message(BOB, ALICE, "m1", Direction::Incoming, 4)), AddOutcome::Journaled);
}

fn paging_by_message_id_then_since_then_all(f: &dyn Fixture) {
    let mut s = f.open();
    for (i, id) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        add(&mut *s, message(ALICE, BOB, id, Direction::Outgoing, 100 + i as i64));
    }
    // After a known id: the later entries; `since` is then ignored (SylkServer).
    assert_eq!(ids(&journal(&mut *s, ALICE, Some("b"), None, None)), ["c", "d", "e"]);
    assert_eq!(ids(&journal(&mut *s, ALICE, Some("b"), Some(0), None)), ["c", "d", "e"]);
    // The first `limit` of them, so a client pages forward with the last id it got.
    assert_eq!(ids(&journal(&mut *s, ALICE, Some("a"), None, Some(2))), ["b", "c"]);
    assert_eq!(ids(&journal(&mut *s, ALICE, Some("c"), None, Some(2))), ["d", "e"]);
    assert!(journal(&mut *s, ALICE, Some("e"), None, Some(2)).is_empty());
    // An unknown id: `since` (strictly after), else everything.
    assert_eq!(ids(&journal(&mut *s, ALICE, Some("zz"), Some(102), None)), ["d", "e"]);
    assert_eq!(ids(&journal(&mut *s, ALICE, Some("zz"), None, None)), ["a", "b", "c", "d", "e"]);
    assert_eq!(ids(&journal(&mut *s, ALICE, Some(""), None, None)), ["a", "b", "c", "d", "e"]);
    assert_eq!(ids(&journal(&mut *s, ALICE, None, Some(103), Some(5))), ["e"]);
    assert!(journal(&mut *s, ALICE, None, Some(104), None).is_empty());
    // Another account's id is not a cursor for this one.
    add(&mut *s, message(BOB, ALICE, "x", Direction::Incoming, 200));
    assert_eq!(journal(&mut *s, ALICE, Some("x"), None, None).len(), 5);
}

fn paging_after_a_removed_message_still_works(f: &dyn Fixture) {
    let mut s = f.open();
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        add(&mut *s, message(ALICE, BOB, id, Direction::Outgoing, i as i64));
    }
    let removed = StoreRequest::RemoveMessage {
        account: ALICE.into(),
        contact: BOB.into(),
        message_id: "b".into(),
        side: RemoveSide::Sender,
        stamp: stamp("rm", 10),
    };
    assert_eq!(ok(&mut *s, removed), StoreResult::Removed { found: true });
    assert_eq!(ids(&journal(&mut *s, ALICE, Some("b"), None, None)), ["c", "rm"]);
    // Trimmed away too.
    ok(&mut *s, StoreRequest::TrimJournal { account: ALICE.into(), keep: 1 });
    assert_eq!(ids(&journal(&mut *s, ALICE, Some("a"), None, None)), ["rm"]);
    // A removed id that comes again is journaled again, at the end.
    assert_eq!(add(&mut *s, message(ALICE, BOB, "b", Direction::Outgoing, 20)), AddOutcome::Journaled);
    assert_eq!(all_ids(&mut *s, ALICE), ["rm", "b"]);
}

fn state_of(s: &mut dyn Storage, id: &str) -> (Option<MessageState>, Vec<String>) {
    let entry = journal(s, ALICE, None, None, None).into_iter().find(|e| e.message_id == id).expect("entry");
    (entry.state, entry.disposition)
}

fn state_updates_follow_sylkserver(f: &dyn Fixture) {
    let mut s = f.open();
    add(&mut *s, message(ALICE, BOB, "out", Direction::Outgoing, 1));
    add(&mut *s, message(ALICE, BOB, "in", Direction::Incoming, 2));
    let update = |id: &str, state| StoreRequest::UpdateState { account: ALICE.into(), message_id: id.into(), state };
    ok(&mut *s, update("out", MessageState::Accepted));
    assert_eq!(
        state_of(&mut *s, "out"),
        (Some(MessageState::Accepted), vec!["positive-delivery".into(), "display".into()])
    );
    ok(&mut *s, update("out", MessageState::Delivered));
    assert_eq!(state_of(&mut *s, "out"), (Some(MessageState::Delivered), vec!["display".into()]));
    ok(&mut *s, update("out", MessageState::Displayed));
    assert_eq!(state_of(&mut *s, "out"), (Some(MessageState::Displayed), vec![]));
    ok(&mut *s, update("out", MessageState::Failed));
    assert_eq!(state_of(&mut *s, "out"), (Some(MessageState::Failed), vec![]));
    // A received message keeps its state; its disposition still follows.
    ok(&mut *s, update("in", MessageState::Delivered));
    assert_eq!(state_of(&mut *s, "in"), (Some(MessageState::Received), vec!["display".into()]));
    assert_eq!(s.execute(&update("nope", MessageState::Delivered)), Err(StoreError::NotFound));
    // Every state is stored as given; `received` (last) sticks.
    for state in MessageState::ALL.into_iter().filter(|s| *s != MessageState::Received).chain([MessageState::Received])
    {
        ok(&mut *s, update("out", state));
        assert_eq!(state_of(&mut *s, "out").0, Some(state));
    }
    ok(&mut *s, update("out", MessageState::Displayed));
    assert_eq!(state_of(&mut *s, "out").0, Some(MessageState::Received));
}

fn mark_read_clears_dispositions_and_keeps_one_marker(f: &dyn Fixture) {
    let mut s = f.open();
    add(&mut *s, message(ALICE, BOB, "b1", Direction::Incoming, 1));
    add(&mut *s, message(ALICE, CAROL, "c1", Direction::Incoming, 2));
    let read = |id: &str, at| StoreRequest::MarkConversationRead {
        account: ALICE.into(),
        contact: BOB.into(),
        stamp: stamp(id, at),
    };
    assert_eq!(ok(&mut *s, read("r1", 3)), StoreResult::Done);
    add(&mut *s, message(ALICE, BOB, "b2", Direction::Incoming, 4));
    ok(&mut *s, read("r2", 5));
    let entries = journal(&mut *s, ALICE, None, None, None);
    assert_eq!(ids(&entries), ["b1", "c1", "b2", "r2"]);
    assert!(entries[0].disposition.is_empty() && entries[2].disposition.is_empty());
    assert_eq!(entries[1].disposition, ["positive-delivery", "display"]);
    assert_eq!(
        entries[3],
        JournalEntry {
            contact: BOB.into(),
            timestamp: "ts-5".into(),
            disposition: vec![],
            message_id: "r2".into(),
            content_type: "application/sylk-conversation-read".into(),
            content: BOB.into(),
            direction: None,
            state: None,
            created_at: UnixMicros(5),
        }
    );
}

fn remove_message_on_the_sender_side(f: &dyn Fixture) {
    let mut s = f.open();
    add(&mut *s, message(ALICE, BOB, "m1", Direction::Outgoing, 1));
    let remove = |id: &str, marker: &str| StoreRequest::RemoveMessage {
        account: ALICE.into(),
        contact: BOB.into(),
        message_id: id.into(),
        side: RemoveSide::Sender,
        stamp: stamp(marker, 2),
    };
    assert_eq!(ok(&mut *s, remove("m1", "x1")), StoreResult::Removed { found: true });
    // Not found: still journaled (SylkServer journals the request).
    assert_eq!(ok(&mut *s, remove("m9", "x2")), StoreResult::Removed { found: false });
    let entries = journal(&mut *s, ALICE, None, None, None);
    assert_eq!(ids(&entries), ["x1", "x2"]);
    assert_eq!(entries[0].content_type, "application/sylk-message-remove");
    assert_eq!(entries[0].content, r#"{"contact":"bob@example.com","message_id":"m1","direction":"outgoing"}"#);
    assert_eq!(entries[0].direction, Some(Direction::Outgoing));
    assert_eq!((entries[0].state, entries[0].disposition.len()), (None, 0));
}

fn remove_message_on_the_receiver_side(f: &dyn Fixture) {
    let mut s = f.open();
    add(&mut *s, message(BOB, ALICE, "m1", Direction::Incoming, 1));
    add(&mut *s, message(BOB, ALICE, "m2", Direction::Outgoing, 2));
    let remove = |id: &str, marker: &str| StoreRequest::RemoveMessage {
        account: BOB.into(),
        contact: ALICE.into(),
        message_id: id.into(),
        side: RemoveSide::Receiver,
        stamp: stamp(marker, 3),
    };
    // Only an incoming copy goes, and only then is a marker journaled.
    assert_eq!(ok(&mut *s, remove("m2", "x1")), StoreResult::Removed { found: false });
    assert_eq!(ok(&mut *s, remove("m9", "x2")), StoreResult::Removed { found: false });
    assert_eq!(ok(&mut *s, remove("m1", "x3")), StoreResult::Removed { found: true });
    let entries = journal(&mut *s, BOB, None, None, None);
    assert_eq!(ids(&entries), ["m2", "x3"]);
    assert_eq!(entries[1].content, r#"{"contact":"alice@example.com","message_id":"m1","direction":"incoming"}"#);
    assert_eq!(entries[1].direction, Some(Direction::Incoming));
}

fn remove_conversation_drops_every_entry_with_the_contact(f: &dyn Fixture) {
    let mut s = f.open();
    add(&mut *s, message(ALICE, BOB, "b1", Direction::Outgoing, 1));
    add(&mut *s, message(ALICE, CAROL, "c1", Direction::Outgoing, 2));
    ok(
        &mut *s,
        StoreRequest::MarkConversationRead { account: ALICE.into(), contact: BOB.into(), stamp: stamp("r", 3) },
    );
    add(&mut *s, message(ALICE, BOB, "b2", Direction::Incoming, 4));
    let remove =
        |id: &str| StoreRequest::RemoveConversation { account: ALICE.into(), contact: BOB.into(), stamp: stamp(id, 5) };
    assert_eq!(ok(&mut *s, remove("gone")), StoreResult::Removed { found: true });
    let entries = journal(&mut *s, ALICE, None, None, None);
    assert_eq!(ids(&entries), ["c1", "gone"]);
    assert_eq!(
        (entries[1].content_type.as_str(), entries[1].content.as_str(), entries[1].direction),
        ("application/sylk-conversation-remove", BOB, None)
    );
    assert_eq!(ok(&mut *s, remove("gone2")), StoreResult::Removed { found: true }, "the marker itself has the contact");
    assert_eq!(all_ids(&mut *s, ALICE), ["c1", "gone2"]);
}

fn trim_keeps_the_newest_entries(f: &dyn Fixture) {
    let mut s = f.open();
    for i in 0..6 {
        add(&mut *s, message(ALICE, BOB, &format!("m{i}"), Direction::Outgoing, i));
    }
    add(&mut *s, message(BOB, ALICE, "other", Direction::Incoming, 9));
    let trim = |keep| StoreRequest::TrimJournal { account: ALICE.into(), keep };
    assert_eq!(ok(&mut *s, trim(10)), StoreResult::Trimmed { dropped: 0 });
    assert_eq!(ok(&mut *s, trim(4)), StoreResult::Trimmed { dropped: 2 });
    assert_eq!(all_ids(&mut *s, ALICE), ["m2", "m3", "m4", "m5"]);
    assert_eq!(ok(&mut *s, trim(0)), StoreResult::Trimmed { dropped: 4 });
    assert!(all_ids(&mut *s, ALICE).is_empty());
    assert_eq!(all_ids(&mut *s, BOB), ["other"]);
}

fn lookup_key(s: &mut dyn Storage, account: &str) -> Option<String> {
    match ok(s, StoreRequest::LookupPublicKey { account: account.into() }) {
        StoreResult::PublicKey { public_key } => public_key,
        other => panic!("LookupPublicKey answered {other:?}"),
    }
}

fn public_keys_are_stored_not_journaled(f: &dyn Fixture) {
    let mut s = f.open();
    assert_eq!(lookup_key(&mut *s, ALICE), None);
    let mut own = message(ALICE, BOB, "k1", Direction::Outgoing, 1);
    own.content_type = "text/pgp-public-key".into();
    own.content = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nalice\n".into();
    assert_eq!(add(&mut *s, own), AddOutcome::PublicKeyStored);
    let mut theirs = message(ALICE, BOB, "k2", Direction::Incoming, 2);
    theirs.content_type = "text/pgp-public-key".into();
    theirs.content = "bob's key".into();
    assert_eq!(add(&mut *s, theirs), AddOutcome::PublicKeyStored);
    let mut private = message(ALICE, ALICE, "k3", Direction::Outgoing, 3);
    private.content_type = "text/pgp-private-key".into();
    assert_eq!(add(&mut *s, private.clone()), AddOutcome::IdReserved);
    assert_eq!(lookup_key(&mut *s, ALICE).as_deref(), Some("-----BEGIN PGP PUBLIC KEY BLOCK-----\nalice\n"));
    assert_eq!(lookup_key(&mut *s, BOB).as_deref(), Some("bob's key"));
    assert!(all_ids(&mut *s, ALICE).is_empty());
    // The reserved ids are cursors: what comes after them.
    add(&mut *s, message(ALICE, BOB, "m1", Direction::Outgoing, 4));
    assert_eq!(ids(&journal(&mut *s, ALICE, Some("k3"), None, None)), ["m1"]);
    assert_eq!(ids(&journal(&mut *s, ALICE, Some("k1"), None, None)), ["m1"]);
    ok(
        &mut *s,
        StoreRequest::StorePublicKey { account: ALICE.into(), public_key: "new".into(), created_at: UnixMicros(5) },
    );
    assert_eq!(lookup_key(&mut *s, ALICE).as_deref(), Some("new"));
}

fn account(s: &mut dyn Storage, name: &str) -> Option<AccountInfo> {
    match ok(s, StoreRequest::GetAccount { account: name.into() }) {
        StoreResult::Account { account } => account,
        other => panic!("GetAccount answered {other:?}"),
    }
}

fn offline_storage_needs_a_known_account(f: &dyn Fixture) {
    let mut s = f.open();
    let stored = |m| StoreRequest::AddMessage { message: m, require_account: true };
    assert_eq!(s.execute(&stored(message(BOB, ALICE, "m1", Direction::Incoming, 1))), Err(StoreError::NotFound));
    assert!(all_ids(&mut *s, BOB).is_empty());
    assert_eq!(account(&mut *s, BOB), None);
    ok(&mut *s, StoreRequest::TouchAccount { account: BOB.into(), now: UnixMicros(5) });
    assert_eq!(
        account(&mut *s, BOB),
        Some(AccountInfo { account: BOB.into(), last_login: UnixMicros(5), token_expires: None })
    );
    ok(&mut *s, StoreRequest::TouchAccount { account: BOB.into(), now: UnixMicros(6) });
    assert_eq!(account(&mut *s, BOB).map(|a| a.last_login), Some(UnixMicros(6)));
    assert_eq!(
        ok(&mut *s, stored(message(BOB, ALICE, "m1", Direction::Incoming, 7))),
        StoreResult::Added { outcome: AddOutcome::Journaled }
    );
    assert_eq!(all_ids(&mut *s, BOB), ["m1"]);
}

fn history(s: &mut dyn Storage, token: &str, id: Option<&str>, now: i64, limit: u32) -> HistoryAnswer {
    let request = StoreRequest::History {
        account: ALICE.into(),
        token: token.into(),
        message_id: id.map(str::to_string),
        now: UnixMicros(now),
        limit,
    };
    match ok(s, request) {
        StoreResult::History { answer } => answer,
        other => panic!("History answered {other:?}"),
    }
}

fn history_needs_the_unexpired_token(f: &dyn Fixture) {
    let mut s = f.open();
    for id in ["a", "b", "c"] {
        add(&mut *s, message(ALICE, BOB, id, Direction::Outgoing, 1));
    }
    assert_eq!(history(&mut *s, "tok", None, 10, 5000), HistoryAnswer::Unauthorized, "no account");
    let set = |token: &str, expires| StoreRequest::SetApiToken {
        account: ALICE.into(),
        token: token.into(),
        expires_at: UnixMicros(expires),
    };
    assert_eq!(s.execute(&set("tok", 100)), Err(StoreError::NotFound));
    ok(&mut *s, StoreRequest::TouchAccount { account: ALICE.into(), now: UnixMicros(1) });
    assert_eq!(history(&mut *s, "tok", None, 10, 5000), HistoryAnswer::Unauthorized, "no token");
    assert_eq!(history(&mut *s, "", None, 10, 5000), HistoryAnswer::Unauthorized, "empty token");
    ok(&mut *s, set("tok", 100));
    assert_eq!(account(&mut *s, ALICE).and_then(|a| a.token_expires), Some(UnixMicros(100)));
    assert_eq!(history(&mut *s, "other", None, 10, 5000), HistoryAnswer::Unauthorized);
    assert_eq!(history(&mut *s, "tok", None, 100, 5000), HistoryAnswer::Unauthorized, "expired");
    let HistoryAnswer::Entries(all) = history(&mut *s, "tok", None, 10, 5000) else { panic!("refused") };
    assert_eq!(ids(&all), ["a", "b", "c"]);
    let HistoryAnswer::Entries(after) = history(&mut *s, "tok", Some("a"), 10, 1) else { panic!("refused") };
    assert_eq!(ids(&after), ["b"]);
    ok(&mut *s, set("", 100));
    assert_eq!(history(&mut *s, "", None, 10, 5000), HistoryAnswer::Unauthorized, "cleared token");
}

fn addressbook(s: &mut dyn Storage, name: &str) -> Addressbook {
    match ok(s, StoreRequest::FetchAddressbook { account: name.into() }) {
        StoreResult::Addressbook { addressbook } => addressbook,
        other => panic!("FetchAddressbook answered {other:?}"),
    }
}

fn addressbook_add_update_delete(f: &dyn Fixture) {
    let mut s = f.open();
    assert_eq!(addressbook(&mut *s, ALICE), Addressbook::default());
    let change = |kind, action, id: &str, data| StoreRequest::UpdateAddressbook {
        account: ALICE.into(),
        kind,
        action,
        id: id.into(),
        data,
        max_items: 0,
    };
    use AddressbookAction::{Add, Delete, Update};
    use AddressbookKind::{Contact, Group, Policy};
    let c1 = json!({"id": "c1", "name": "Bob", "uri": BOB, "properties": {"favorite": true}, "tags": ["a", null, 1.5]});
    ok(&mut *s, change(Contact, Add, "c1", c1.clone()));
    ok(&mut *s, change(Contact, Add, "c2", json!({"id": "c2", "name": "Carol"})));
    ok(&mut *s, change(Group, Add, "g1", json!({"id": "g1", "contacts": ["c1"]})));
    ok(&mut *s, change(Policy, Add, "p1", json!({"id": "p1", "action": "allow"})));
    // `add` of a known id replaces it in place; `update` does the same.
    ok(&mut *s, change(Contact, Add, "c1", json!({"id": "c1", "name": "Bobby"})));
    ok(&mut *s, change(Contact, Update, "c2", json!({"id": "c2", "name": "Caroline"})));
    assert_eq!(s.execute(&change(Contact, Update, "c9", json!({"id": "c9"}))), Err(StoreError::NotFound));
    assert_eq!(s.execute(&change(Group, Delete, "c1", json!(null))), Err(StoreError::NotFound), "ids are per kind");
    let book = addressbook(&mut *s, ALICE);
    assert_eq!(book.contacts, [json!({"id": "c1", "name": "Bobby"}), json!({"id": "c2", "name": "Caroline"})]);
    assert_eq!(book.groups, [json!({"id": "g1", "contacts": ["c1"]})]);
    assert_eq!(book.policies, [json!({"id": "p1", "action": "allow"})]);
    ok(&mut *s, change(Contact, Delete, "c1", json!({})));
    ok(&mut *s, change(Contact, Add, "c1", c1.clone()));
    assert_eq!(addressbook(&mut *s, ALICE).contacts, [json!({"id": "c2", "name": "Caroline"}), c1]);
    assert_eq!(addressbook(&mut *s, BOB), Addressbook::default());
}

/// `max_items` bounds an account's items (all kinds together): an `add` of a new item past it
/// is refused and changes nothing; replacing an existing item, updates and deletes still work,
/// and a delete makes room again. Other accounts are not counted.
fn addressbook_holds_at_most_max_items(f: &dyn Fixture) {
    let mut s = f.open();
    let change = |account: &str, kind, action, id: &str| StoreRequest::UpdateAddressbook {
        account: account.into(),
        kind,
        action,
        id: id.into(),
        data: json!({"id": id}),
        max_items: 2,
    };
    use AddressbookAction::{Add, Delete};
    use AddressbookKind::{Contact, Group};
    ok(&mut *s, change(ALICE, Contact, Add, "c1"));
    ok(&mut *s, change(ALICE, Group, Add, "g1"));
    let before = addressbook(&mut *s, ALICE);
    match s.execute(&change(ALICE, Contact, Add, "c2")) {
        Err(StoreError::Constraint(why)) => assert_eq!(why, "addressbook holds at most 2 items"),
        other => panic!("a third item: {other:?}"),
    }
    assert_eq!(addressbook(&mut *s, ALICE), before, "the refused add changed nothing");
    ok(&mut *s, change(ALICE, Contact, Add, "c1"));
    ok(&mut *s, change(BOB, Contact, Add, "c2"));
    ok(&mut *s, change(ALICE, Group, Delete, "g1"));
    ok(&mut *s, change(ALICE, Contact, Add, "c2"));
}

fn accounts_do_not_see_each_other(f: &dyn Fixture) {
    let mut s = f.open();
    add(&mut *s, message(ALICE, BOB, "a1", Direction::Outgoing, 1));
    add(&mut *s, message(BOB, ALICE, "a1", Direction::Incoming, 1));
    ok(&mut *s, StoreRequest::RemoveConversation { account: BOB.into(), contact: ALICE.into(), stamp: stamp("x", 2) });
    ok(
        &mut *s,
        StoreRequest::UpdateState { account: ALICE.into(), message_id: "a1".into(), state: MessageState::Accepted },
    );
    assert_eq!(all_ids(&mut *s, ALICE), ["a1"]);
    assert_eq!(all_ids(&mut *s, BOB), ["x"]);
    assert_eq!(state_of(&mut *s, "a1").0, Some(MessageState::Accepted));
}

fn two_connections_see_each_others_writes(f: &dyn Fixture) {
    let mut one = f.open();
    let mut two = f.open();
    add(&mut *one, message(ALICE, BOB, "m1", Direction::Outgoing, 1));
    assert_eq!(all_ids(&mut *two, ALICE), ["m1"]);
    add(&mut *two, message(ALICE, BOB, "m2", Direction::Outgoing, 2));
    assert_eq!(add(&mut *two, message(ALICE, BOB, "m1", Direction::Outgoing, 3)), AddOutcome::Duplicate);
    ok(
        &mut *one,
        StoreRequest::UpdateState { account: ALICE.into(), message_id: "m2".into(), state: MessageState::Delivered },
    );
    assert_eq!(state_of(&mut *two, "m2").0, Some(MessageState::Delivered));
    assert_eq!(all_ids(&mut *one, ALICE), ["m1", "m2"]);
    // Writers on threads at once: every entry lands once.
    let threads: Vec<_> = [one, two]
        .into_iter()
        .enumerate()
        .map(|(t, mut s)| {
            std::thread::spawn(move || {
                for i in 0..25 {
                    add(&mut *s, message(CAROL, BOB, &format!("t{t}-{i}"), Direction::Outgoing, i));
                    add(&mut *s, message(CAROL, BOB, &format!("shared-{i}"), Direction::Outgoing, i));
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().expect("writer"));
    let mut ids = all_ids(&mut *f.open(), CAROL);
    assert_eq!(ids.len(), 75, "{ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 75);
}

fn text_survives_byte_for_byte(f: &dyn Fixture) {
    let mut s = f.open();
    let mut m = message("ünï@example.com", "b'ob\"@example.com", "id; DROP TABLE journal; --", Direction::Outgoing, -5);
    m.content = "line1\r\nline2\t\u{1F600} $1 ?1 '' \\ \u{7f}".into();
    m.content_type = "text/html".into();
    m.timestamp = "2026-02-03T04:05:06.789+02:00".into();
    m.disposition = vec!["a\"b".into()];
    add(&mut *s, m.clone());
    let entries = journal(&mut *s, &m.account, None, None, None);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        (&e.contact, &e.message_id, &e.content, &e.timestamp, &e.disposition, e.created_at),
        (&m.contact, &m.message_id, &m.content, &m.timestamp, &m.disposition, m.created_at)
    );
}

/// A migration only this test knows: version 2 adds a column.
const V2: Migration = Migration {
    version: 2,
    sqlite: "ALTER TABLE accounts ADD COLUMN note TEXT NOT NULL DEFAULT 'none'",
    postgres: "ALTER TABLE accounts ADD COLUMN note TEXT NOT NULL DEFAULT 'none'",
};

fn an_old_schema_is_migrated_and_a_newer_one_refused(f: &dyn Fixture) {
    // An old database: the schema of version 1, with data in it.
    assert_eq!(f.open_with(&MIGRATIONS[..1]), Ok(1));
    {
        let mut s = f.open();
        add(&mut *s, message(ALICE, BOB, "m1", Direction::Outgoing, 1));
        ok(&mut *s, StoreRequest::TouchAccount { account: ALICE.into(), now: UnixMicros(1) });
    }
    assert_eq!(f.open_with(&[MIGRATIONS[0], V2]), Ok(2));
    assert_eq!(f.sql("SELECT account, note FROM accounts"), [[ALICE, "none"]]);
    assert_eq!(f.sql("SELECT version FROM schema_version ORDER BY version"), [["1"], ["2"]]);
    // Reopening migrates nothing again.
    assert_eq!(f.open_with(&[MIGRATIONS[0], V2]), Ok(2));
    assert_eq!(f.sql("SELECT COUNT(*) FROM schema_version"), [["2"]]);
    // This gateway knows only version 1: it refuses the newer database and leaves it alone.
    let refused = f.open_with(MIGRATIONS);
    assert!(matches!(refused, Err(StoreError::Unavailable(ref why)) if why.contains("newer")), "{refused:?}");
    assert_eq!(f.sql("SELECT COUNT(*) FROM schema_version"), [["2"]]);
    assert_eq!(f.sql("SELECT message_id FROM journal"), [["m1"]]);
}

fn a_failed_request_changes_nothing(f: &dyn Fixture) {
    let mut s = f.open();
    ok(
        &mut *s,
        StoreRequest::UpdateAddressbook {
            account: ALICE.into(),
            kind: AddressbookKind::Contact,
            action: AddressbookAction::Add,
            id: "c1".into(),
            data: json!({"id": "c1"}),
            max_items: 0,
        },
    );
    let before = addressbook(&mut *s, ALICE);
    let update = StoreRequest::UpdateAddressbook {
        account: ALICE.into(),
        kind: AddressbookKind::Contact,
        action: AddressbookAction::Update,
        id: "c2".into(),
        data: json!({"id": "c2"}),
        max_items: 0,
    };
    assert_eq!(s.execute(&update), Err(StoreError::NotFound));
    assert_eq!(addressbook(&mut *s, ALICE), before);
    // The connection is usable after a failure.
    assert_eq!(add(&mut *s, message(ALICE, BOB, "m1", Direction::Outgoing, 1)), AddOutcome::Journaled);
}
