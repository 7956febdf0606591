//! Every storage operation, once, over [`Db`]: the semantics both backends share (the contracts
//! are stated on [`StoreRequest`]).

use serde::Serialize;
use sylkgw_core::storage::{
    AccountInfo, AddOutcome, Addressbook, AddressbookAction, AddressbookKind, Direction, HistoryAnswer, JournalEntry,
    JournalStamp, MessageState, NewMessage, RemoveSide, StoreError, StoreRequest, StoreResult, UnixMicros,
};

use crate::sql::{transaction, Db, Param, Val};

const READ_MARKER: &str = "application/sylk-conversation-read";
const MESSAGE_REMOVED: &str = "application/sylk-message-remove";
const CONVERSATION_REMOVED: &str = "application/sylk-conversation-remove";
const IMDN_JSON: &str = "message/imdn+json";
const PUBLIC_KEY: &str = "text/pgp-public-key";
const PRIVATE_KEY: &str = "text/pgp-private-key";

const ENTRY_COLUMNS: &str =
    "contact, msg_timestamp, disposition, message_id, content_type, content, direction, state, created_at";

/// Executes `request` in one transaction.
pub(crate) fn execute(db: &mut dyn Db, request: &StoreRequest) -> Result<StoreResult, StoreError> {
    transaction(db, |db| run(db, request))
}

fn run(db: &mut dyn Db, request: &StoreRequest) -> Result<StoreResult, StoreError> {
    match request {
        StoreRequest::AddMessage { message, require_account } => add_message(db, message, *require_account),
        StoreRequest::UpdateState { account, message_id, state } => update_state(db, account, message_id, *state),
        StoreRequest::Journal { account, message_id, since, limit } => {
            journal(db, account, message_id.as_deref(), *since, *limit).map(|entries| StoreResult::Journal { entries })
        }
        StoreRequest::MarkConversationRead { account, contact, stamp } => mark_read(db, account, contact, stamp),
        StoreRequest::RemoveMessage { account, contact, message_id, side, stamp } => {
            remove_message(db, account, contact, message_id, *side, stamp)
        }
        StoreRequest::RemoveConversation { account, contact, stamp } => {
            remove_conversation(db, account, contact, stamp)
        }
        StoreRequest::TrimJournal { account, keep } => trim(db, account, *keep),
        StoreRequest::StorePublicKey { account, public_key, created_at } => {
            store_public_key(db, account, public_key, *created_at).map(|()| StoreResult::Done)
        }
        StoreRequest::LookupPublicKey { account } => {
            let rows = db.query("SELECT public_key FROM public_keys WHERE account = $1", &[Param::Text(account)])?;
            let public_key = rows.into_iter().next().map(|mut r| r.remove(0).text()).transpose()?;
            Ok(StoreResult::PublicKey { public_key })
        }
        StoreRequest::TouchAccount { account, now } => {
            db.exec(
                "INSERT INTO accounts (account, last_login) VALUES ($1, $2)
                 ON CONFLICT (account) DO UPDATE SET last_login = excluded.last_login",
                &[Param::Text(account), Param::Int(now.0)],
            )?;
            Ok(StoreResult::Done)
        }
        StoreRequest::GetAccount { account } => {
            Ok(StoreResult::Account { account: get_account(db, account)?.map(|(info, _)| info) })
        }
        StoreRequest::SetApiToken { account, token, expires_at } => {
            let changed = db.exec(
                "UPDATE accounts SET api_token = $2, token_expires = $3 WHERE account = $1",
                &[Param::Text(account), Param::Text(token), Param::Int(expires_at.0)],
            )?;
            found(changed).map(|()| StoreResult::Done)
        }
        StoreRequest::History { account, token, message_id, now, limit } => {
            let authorized = match get_account(db, account)? {
                Some((info, Some(stored))) => {
                    !stored.is_empty() && stored == *token && info.token_expires.is_some_and(|at| at > *now)
                }
                _ => false,
            };
            let answer = if authorized {
                HistoryAnswer::Entries(journal(db, account, message_id.as_deref(), None, Some(*limit))?)
            } else {
                HistoryAnswer::Unauthorized
            };
            Ok(StoreResult::History { answer })
        }
        StoreRequest::FetchAddressbook { account } => fetch_addressbook(db, account),
        StoreRequest::UpdateAddressbook { account, kind, action, id, data, max_items } => {
            update_addressbook(db, account, (*kind, *action), id, data, *max_items)
        }
    }
}

fn found(changed: u64) -> Result<(), StoreError> {
    if changed == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

fn exists(db: &mut dyn Db, sql: &str, params: &[Param<'_>]) -> Result<bool, StoreError> {
    Ok(!db.query(sql, params)?.is_empty())
}

fn disposition_json(disposition: &[String]) -> String {
    serde_json::to_string(disposition).expect("strings serialize")
}

fn parse_disposition(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("disposition {text:?}: {e}")))
}

/// The journal position an id maps to, if it was ever journaled (or reserved) for `account`.
fn id_position(db: &mut dyn Db, account: &str, message_id: &str) -> Result<Option<i64>, StoreError> {
    let rows = db.query(
        "SELECT seq FROM message_ids WHERE account = $1 AND message_id = $2",
        &[Param::Text(account), Param::Text(message_id)],
    )?;
    rows.into_iter().next().map(|r| r[0].int()).transpose()
}

/// The `seq` of an id claimed by a transaction that has not journaled it yet.
const CLAIMED: i64 = -1;

/// Claims `message_id` for `account`: `true` if it is new (now mapped to [`CLAIMED`]), `false`
/// if it was known. Either way its mapping row is locked until the transaction ends, so two
/// gateways adding the same id at once journal it once (PostgreSQL: the second waits for the
/// first to commit and then finds it known).
fn claim_id(db: &mut dyn Db, account: &str, message_id: &str, at: UnixMicros) -> Result<bool, StoreError> {
    let key = [Param::Text(account), Param::Text(message_id)];
    let lock = "UPDATE message_ids SET seq = seq WHERE account = $1 AND message_id = $2";
    if db.exec(lock, &key)? > 0 {
        return Ok(false);
    }
    let claimed = db.exec(
        "INSERT INTO message_ids (account, message_id, seq, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (account, message_id) DO NOTHING",
        &[Param::Text(account), Param::Text(message_id), Param::Int(CLAIMED), Param::Int(at.0)],
    )?;
    if claimed == 1 {
        return Ok(true);
    }
    db.exec(lock, &key)?;
    Ok(false)
}

/// Maps `message_id` to journal position `seq` unless it is mapped to one already (the first
/// position of an id is the one paging uses, as SylkServer's id-to-timestamp map).
fn map_id(db: &mut dyn Db, account: &str, message_id: &str, seq: i64, at: UnixMicros) -> Result<(), StoreError> {
    db.exec(
        "INSERT INTO message_ids (account, message_id, seq, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (account, message_id) DO UPDATE SET seq = excluded.seq, created_at = excluded.created_at
         WHERE message_ids.seq < 0",
        &[Param::Text(account), Param::Text(message_id), Param::Int(seq), Param::Int(at.0)],
    )?;
    Ok(())
}

/// Maps an id that gets no journal entry to the current end of the journal.
fn reserve_id(db: &mut dyn Db, account: &str, message_id: &str, at: UnixMicros) -> Result<(), StoreError> {
    let rows = db.query("SELECT COALESCE(MAX(seq), 0) FROM journal", &[])?;
    let end = rows.into_iter().next().map_or(Ok(0), |r| r[0].int())?;
    map_id(db, account, message_id, end, at)
}

/// Journals `m`; its position. The account's `journal_heads` row is written first and so stays
/// locked until the transaction ends: writers of one account take positions in commit order,
/// and a reader paging "after the last id it saw" never misses an entry that another gateway
/// had numbered earlier but committed later (PostgreSQL; SQLite has one writer at a time).
fn insert_entry(db: &mut dyn Db, m: &NewMessage) -> Result<i64, StoreError> {
    db.exec(
        "INSERT INTO journal_heads (account, entries_written) VALUES ($1, 1)
         ON CONFLICT (account) DO UPDATE SET entries_written = journal_heads.entries_written + 1",
        &[Param::Text(&m.account)],
    )?;
    let disposition = disposition_json(&m.disposition);
    let rows = db.query(
        "INSERT INTO journal (account, contact, direction, content_type, content, message_id, msg_timestamp,
                              disposition, state, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING seq",
        &[
            Param::Text(&m.account),
            Param::Text(&m.contact),
            Param::Text(m.direction.map_or("", Direction::as_str)),
            Param::Text(&m.content_type),
            Param::Text(&m.content),
            Param::Text(&m.message_id),
            Param::Text(&m.timestamp),
            Param::Text(&disposition),
            Param::OptText(m.state.map(MessageState::as_str)),
            Param::Int(m.created_at.0),
        ],
    )?;
    let seq = rows.into_iter().next().ok_or_else(|| StoreError::Corrupt("INSERT returned no seq".into()))?[0].int()?;
    map_id(db, &m.account, &m.message_id, seq, m.created_at)?;
    Ok(seq)
}

fn add_message(db: &mut dyn Db, m: &NewMessage, require_account: bool) -> Result<StoreResult, StoreError> {
    if require_account && !exists(db, "SELECT 1 FROM accounts WHERE account = $1", &[Param::Text(&m.account)])? {
        return Err(StoreError::NotFound);
    }
    let added = |outcome| Ok(StoreResult::Added { outcome });
    if !claim_id(db, &m.account, &m.message_id, m.created_at)? {
        let journaled = exists(
            db,
            "SELECT 1 FROM journal WHERE account = $1 AND message_id = $2",
            &[Param::Text(&m.account), Param::Text(&m.message_id)],
        )?;
        if m.content_type == IMDN_JSON || journaled {
            return added(AddOutcome::Duplicate);
        }
    }
    match m.content_type.as_str() {
        PUBLIC_KEY => {
            let owner = if m.direction == Some(Direction::Outgoing) { &m.account } else { &m.contact };
            store_public_key(db, owner, &m.content, m.created_at)?;
            reserve_id(db, &m.account, &m.message_id, m.created_at)?;
            added(AddOutcome::PublicKeyStored)
        }
        PRIVATE_KEY => {
            reserve_id(db, &m.account, &m.message_id, m.created_at)?;
            added(AddOutcome::IdReserved)
        }
        _ => {
            insert_entry(db, m)?;
            added(AddOutcome::Journaled)
        }
    }
}

fn store_public_key(db: &mut dyn Db, account: &str, key: &str, at: UnixMicros) -> Result<(), StoreError> {
    db.exec(
        "INSERT INTO public_keys (account, public_key, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (account) DO UPDATE SET public_key = excluded.public_key, created_at = excluded.created_at",
        &[Param::Text(account), Param::Text(key), Param::Int(at.0)],
    )?;
    Ok(())
}

fn update_state(
    db: &mut dyn Db,
    account: &str,
    message_id: &str,
    state: MessageState,
) -> Result<StoreResult, StoreError> {
    let rows = db.query(
        "SELECT seq, state, disposition FROM journal WHERE account = $1 AND message_id = $2",
        &[Param::Text(account), Param::Text(message_id)],
    )?;
    if rows.is_empty() {
        return Err(StoreError::NotFound);
    }
    for row in rows {
        let mut row = row.into_iter();
        let (Some(seq), Some(old), Some(disposition)) = (row.next(), row.next(), row.next()) else {
            return Err(StoreError::Corrupt("short journal row".into()));
        };
        let old = old.opt_text()?;
        let new = if old.as_deref() == Some(MessageState::Received.as_str()) {
            old
        } else {
            Some(state.as_str().to_string())
        };
        let mut disposition = parse_disposition(&disposition.text()?)?;
        match state {
            MessageState::Delivered => disposition.retain(|d| d != "positive-delivery"),
            MessageState::Displayed => disposition.clear(),
            _ => {}
        }
        db.exec(
            "UPDATE journal SET state = $2, disposition = $3 WHERE seq = $1",
            &[Param::Int(seq.int()?), Param::OptText(new.as_deref()), Param::Text(&disposition_json(&disposition))],
        )?;
    }
    Ok(StoreResult::Done)
}

fn journal(
    db: &mut dyn Db,
    account: &str,
    message_id: Option<&str>,
    since: Option<UnixMicros>,
    limit: Option<u32>,
) -> Result<Vec<JournalEntry>, StoreError> {
    let after = match message_id {
        Some(id) => id_position(db, account, id)?,
        None => None,
    };
    let mut params = vec![Param::Text(account)];
    let filter = match (after, since) {
        (Some(seq), _) => {
            params.push(Param::Int(seq));
            " AND seq > $2"
        }
        (None, Some(at)) => {
            params.push(Param::Int(at.0));
            " AND created_at > $2"
        }
        (None, None) => "",
    };
    let limit = match limit {
        Some(n) => {
            params.push(Param::Int(i64::from(n)));
            format!(" LIMIT ${}", params.len())
        }
        None => String::new(),
    };
    let rows = db.query(
        &format!("SELECT {ENTRY_COLUMNS} FROM journal WHERE account = $1{filter} ORDER BY seq{limit}"),
        &params,
    )?;
    rows.into_iter().map(entry).collect()
}

fn entry(row: Vec<Val>) -> Result<JournalEntry, StoreError> {
    let Ok([contact, timestamp, disposition, message_id, content_type, content, direction, state, created_at]) =
        <[Val; 9]>::try_from(row)
    else {
        return Err(StoreError::Corrupt("journal row has the wrong width".into()));
    };
    let state = match state.opt_text()? {
        Some(text) => {
            Some(MessageState::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("message state {text:?}")))?)
        }
        None => None,
    };
    Ok(JournalEntry {
        contact: contact.text()?,
        timestamp: timestamp.text()?,
        disposition: parse_disposition(&disposition.text()?)?,
        message_id: message_id.text()?,
        content_type: content_type.text()?,
        content: content.text()?,
        direction: Direction::parse(&direction.text()?),
        state,
        created_at: UnixMicros(created_at.int()?),
    })
}

/// A journal marker: an entry the store writes itself.
fn marker(
    account: &str,
    contact: &str,
    direction: Option<Direction>,
    content_type: &str,
    content: String,
    stamp: &JournalStamp,
) -> NewMessage {
    NewMessage {
        account: account.to_string(),
        contact: contact.to_string(),
        direction,
        content_type: content_type.to_string(),
        content,
        message_id: stamp.message_id.clone(),
        timestamp: stamp.timestamp.clone(),
        disposition: Vec::new(),
        state: None,
        created_at: stamp.created_at,
    }
}

fn mark_read(db: &mut dyn Db, account: &str, contact: &str, stamp: &JournalStamp) -> Result<StoreResult, StoreError> {
    db.exec(
        "DELETE FROM journal WHERE account = $1 AND contact = $2 AND content_type = $3",
        &[Param::Text(account), Param::Text(contact), Param::Text(READ_MARKER)],
    )?;
    db.exec(
        "UPDATE journal SET disposition = '[]' WHERE account = $1 AND contact = $2 AND disposition <> '[]'",
        &[Param::Text(account), Param::Text(contact)],
    )?;
    insert_entry(db, &marker(account, contact, None, READ_MARKER, contact.to_string(), stamp))?;
    Ok(StoreResult::Done)
}

/// `application/sylk-message-remove` content, keys in SylkServer's order.
#[derive(Serialize)]
struct RemovedMessage<'a> {
    contact: &'a str,
    message_id: &'a str,
    direction: &'a str,
}

fn remove_message(
    db: &mut dyn Db,
    account: &str,
    contact: &str,
    message_id: &str,
    side: RemoveSide,
    stamp: &JournalStamp,
) -> Result<StoreResult, StoreError> {
    let (removed, direction) = match side {
        RemoveSide::Sender => (
            db.exec(
                "DELETE FROM journal WHERE account = $1 AND message_id = $2",
                &[Param::Text(account), Param::Text(message_id)],
            )?,
            Direction::Outgoing,
        ),
        RemoveSide::Receiver => (
            db.exec(
                "DELETE FROM journal WHERE account = $1 AND message_id = $2 AND direction = $3",
                &[Param::Text(account), Param::Text(message_id), Param::Text(Direction::Incoming.as_str())],
            )?,
            Direction::Incoming,
        ),
    };
    if removed > 0 || side == RemoveSide::Sender {
        let content = RemovedMessage { contact, message_id, direction: direction.as_str() };
        let content = serde_json::to_string(&content).expect("strings serialize");
        insert_entry(db, &marker(account, contact, Some(direction), MESSAGE_REMOVED, content, stamp))?;
    }
    Ok(StoreResult::Removed { found: removed > 0 })
}

fn remove_conversation(
    db: &mut dyn Db,
    account: &str,
    contact: &str,
    stamp: &JournalStamp,
) -> Result<StoreResult, StoreError> {
    let removed = db.exec(
        "DELETE FROM journal WHERE account = $1 AND contact = $2",
        &[Param::Text(account), Param::Text(contact)],
    )?;
    insert_entry(db, &marker(account, contact, None, CONVERSATION_REMOVED, contact.to_string(), stamp))?;
    Ok(StoreResult::Removed { found: removed > 0 })
}

fn trim(db: &mut dyn Db, account: &str, keep: u64) -> Result<StoreResult, StoreError> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    let rows = db.query(
        "SELECT seq FROM journal WHERE account = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2",
        &[Param::Text(account), Param::Int(keep)],
    )?;
    let dropped = match rows.into_iter().next() {
        Some(row) => db.exec(
            "DELETE FROM journal WHERE account = $1 AND seq <= $2",
            &[Param::Text(account), Param::Int(row[0].int()?)],
        )?,
        None => 0,
    };
    Ok(StoreResult::Trimmed { dropped })
}

/// The account record and its API token.
fn get_account(db: &mut dyn Db, account: &str) -> Result<Option<(AccountInfo, Option<String>)>, StoreError> {
    let rows = db.query(
        "SELECT last_login, token_expires, api_token FROM accounts WHERE account = $1",
        &[Param::Text(account)],
    )?;
    let Some(row) = rows.into_iter().next() else { return Ok(None) };
    let Ok([last_login, token_expires, api_token]) = <[Val; 3]>::try_from(row) else {
        return Err(StoreError::Corrupt("accounts row has the wrong width".into()));
    };
    let info = AccountInfo {
        account: account.to_string(),
        last_login: UnixMicros(last_login.int()?),
        token_expires: token_expires.opt_int()?.map(UnixMicros),
    };
    Ok(Some((info, api_token.opt_text()?)))
}

fn fetch_addressbook(db: &mut dyn Db, account: &str) -> Result<StoreResult, StoreError> {
    let rows =
        db.query("SELECT kind, data FROM addressbook WHERE account = $1 ORDER BY position", &[Param::Text(account)])?;
    let mut addressbook = Addressbook::default();
    for row in rows {
        let mut row = row.into_iter();
        let (Some(kind), Some(data)) = (row.next(), row.next()) else {
            return Err(StoreError::Corrupt("short addressbook row".into()));
        };
        let (kind, data) = (kind.text()?, data.text()?);
        let value = serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("addressbook item: {e}")))?;
        match kind.as_str() {
            "contact" => addressbook.contacts.push(value),
            "group" => addressbook.groups.push(value),
            "policy" => addressbook.policies.push(value),
            other => return Err(StoreError::Corrupt(format!("addressbook kind {other:?}"))),
        }
    }
    Ok(StoreResult::Addressbook { addressbook })
}

fn update_addressbook(
    db: &mut dyn Db,
    account: &str,
    (kind, action): (AddressbookKind, AddressbookAction),
    id: &str,
    data: &serde_json::Value,
    max_items: u32,
) -> Result<StoreResult, StoreError> {
    let key = [Param::Text(account), Param::Text(kind.as_str()), Param::Text(id)];
    if action == AddressbookAction::Add && max_items > 0 {
        // A soft bound: two gateways adding at once may pass it by one each.
        let known = "SELECT 1 FROM addressbook WHERE account = $1 AND kind = $2 AND item_id = $3";
        if !exists(db, known, &key)? {
            let rows = db.query("SELECT COUNT(*) FROM addressbook WHERE account = $1", &[Param::Text(account)])?;
            let held = rows.into_iter().next().map(|r| r[0].int()).transpose()?.unwrap_or(0);
            if held >= i64::from(max_items) {
                return Err(StoreError::Constraint(format!("addressbook holds at most {max_items} items")));
            }
        }
    }
    let data = data.to_string();
    let replace = "UPDATE addressbook SET data = $4 WHERE account = $1 AND kind = $2 AND item_id = $3";
    let with_data = |data| [key[0].clone(), key[1].clone(), key[2].clone(), Param::Text(data)];
    match action {
        AddressbookAction::Add => {
            // One statement, so gateways adding the same new item at once do not collide.
            db.exec(
                "INSERT INTO addressbook (account, kind, item_id, position, data)
                 SELECT $1, $2, $3, COALESCE(MAX(position), 0) + 1, $4 FROM addressbook WHERE account = $1
                 ON CONFLICT (account, kind, item_id) DO UPDATE SET data = excluded.data",
                &with_data(&data),
            )?;
        }
        AddressbookAction::Update => found(db.exec(replace, &with_data(&data))?)?,
        AddressbookAction::Delete => {
            found(db.exec("DELETE FROM addressbook WHERE account = $1 AND kind = $2 AND item_id = $3", &key)?)?
        }
    }
    Ok(StoreResult::Done)
}
