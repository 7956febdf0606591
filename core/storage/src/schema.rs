//! The schema, created and migrated by the gateway itself.
//!
//! `schema_version` holds one row per applied migration; a database is at the highest version
//! listed (0 when empty). Opening runs, in one transaction, every migration above that version,
//! in order; a database at a version above the last known one is refused (`Unavailable`), so
//! an older gateway never writes a newer schema. PostgreSQL takes an advisory lock first, so
//! gateways starting together migrate once.

use sylkgw_core::storage::StoreError;

use crate::sql::{transaction, Db, Dialect};

/// One schema step, in each dialect.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// 1, 2, …: the version the database is at once this step ran.
    pub version: i64,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Every migration this gateway knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[Migration { version: 1, sqlite: V1_SQLITE, postgres: V1_POSTGRES }];

/// Columns every dialect shares; `seq` orders the journal and is never reused.
macro_rules! v1 {
    ($seq:literal) => {
        concat!(
            "CREATE TABLE journal (
                seq ",
            $seq,
            ",
                account TEXT NOT NULL,
                contact TEXT NOT NULL,
                direction TEXT NOT NULL,
                content_type TEXT NOT NULL,
                content TEXT NOT NULL,
                message_id TEXT NOT NULL,
                msg_timestamp TEXT NOT NULL,
                disposition TEXT NOT NULL,
                state TEXT,
                created_at BIGINT NOT NULL
            );
            CREATE INDEX journal_by_account ON journal (account, seq);
            CREATE INDEX journal_by_message ON journal (account, message_id);
            CREATE INDEX journal_by_contact ON journal (account, contact);
            CREATE INDEX journal_by_time ON journal (account, created_at);
            CREATE TABLE journal_heads (
                account TEXT PRIMARY KEY,
                entries_written BIGINT NOT NULL
            );
            CREATE TABLE message_ids (
                account TEXT NOT NULL,
                message_id TEXT NOT NULL,
                seq BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (account, message_id)
            );
            CREATE TABLE accounts (
                account TEXT PRIMARY KEY,
                last_login BIGINT NOT NULL,
                api_token TEXT,
                token_expires BIGINT
            );
            CREATE TABLE public_keys (
                account TEXT PRIMARY KEY,
                public_key TEXT NOT NULL,
                created_at BIGINT NOT NULL
            );
            CREATE TABLE addressbook (
                account TEXT NOT NULL,
                kind TEXT NOT NULL,
                item_id TEXT NOT NULL,
                position BIGINT NOT NULL,
                data TEXT NOT NULL,
                PRIMARY KEY (account, kind, item_id)
            );"
        )
    };
}

const V1_SQLITE: &str = v1!("INTEGER PRIMARY KEY AUTOINCREMENT");
const V1_POSTGRES: &str = v1!("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY");

/// Key of PostgreSQL's advisory lock around migrations ("sylk").
const MIGRATION_LOCK: i64 = 0x7379_6c6b;

/// Brings `db` to the last version of `migrations`; the version it is at afterwards.
pub(crate) fn migrate(db: &mut dyn Db, migrations: &[Migration]) -> Result<i64, StoreError> {
    let newest = migrations.last().map_or(0, |m| m.version);
    transaction(db, |db| {
        if db.dialect() == Dialect::Postgres {
            db.query(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"), &[])?;
        }
        db.batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL, applied_at TEXT NOT NULL)")?;
        let rows = db.query("SELECT MAX(version) FROM schema_version", &[])?;
        let current = rows.into_iter().next().and_then(|r| r.into_iter().next()).map_or(Ok(None), |v| v.opt_int())?;
        let current = current.unwrap_or(0);
        if current > newest {
            return Err(StoreError::Unavailable(format!(
                "database schema version {current} is newer than this gateway knows ({newest})"
            )));
        }
        for migration in migrations.iter().filter(|m| m.version > current) {
            let sql = match db.dialect() {
                Dialect::Sqlite => migration.sqlite,
                Dialect::Postgres => migration.postgres,
            };
            db.batch(sql)?;
            db.batch(&format!(
                "INSERT INTO schema_version (version, applied_at) VALUES ({}, CURRENT_TIMESTAMP)",
                migration.version
            ))?;
            log::info!("storage: schema migrated to version {}", migration.version);
        }
        Ok(newest)
    })
}
