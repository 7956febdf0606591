//! The shared backend: a PostgreSQL server that several gateways use at once. Every request is
//! one transaction; a lost connection is `Unavailable` and is re-opened on the next request.

use std::collections::HashMap;

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Statement};
use sylkgw_core::storage::{StoreError, StoreRequest, StoreResult};

use crate::schema::{self, Migration, MIGRATIONS};
use crate::sql::{Db, Dialect, Param, Val};
use crate::{ops, Storage};

/// A connection to the PostgreSQL store. One per worker thread.
pub struct Postgres {
    url: String,
    client: Option<Client>,
    /// Prepared statements of the current connection, by SQL text.
    statements: HashMap<String, Statement>,
}

impl Postgres {
    /// Connects to `url` (`postgresql://user:password@host:port/db`, or
    /// `postgresql://user@/db?host=/socket/dir` for a Unix socket) and migrates the schema.
    pub fn open(url: &str) -> Result<Postgres, StoreError> {
        Postgres::open_with(url, MIGRATIONS)
    }

    /// Connects and migrates to the last of `migrations` (tests use this to build old databases).
    pub fn open_with(url: &str, migrations: &[Migration]) -> Result<Postgres, StoreError> {
        let mut store = Postgres { url: url.to_string(), client: None, statements: HashMap::new() };
        schema::migrate(&mut store, migrations)?;
        Ok(store)
    }

    /// The schema version the database is at.
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        let rows = self.query("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?;
        rows.into_iter().next().map_or(Ok(0), |r| r[0].int())
    }

    /// The live connection, (re)connecting if there is none.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.statements.clear();
            let client = Client::connect(&self.url, NoTls)
                .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
            self.client = Some(client);
        }
        match self.client.as_mut() {
            Some(client) => Ok(client),
            None => Err(StoreError::Unavailable("no connection".into())),
        }
    }

    /// Maps a client error, forgetting the connection if it is gone.
    fn error(&mut self, error: postgres::Error) -> StoreError {
        if error.is_closed() || self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        match error.code() {
            Some(code) if code.code().starts_with("23") => StoreError::Constraint(error.to_string()),
            _ => StoreError::Unavailable(error.to_string()),
        }
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let prepared = self.client()?.prepare(sql);
        let statement = prepared.map_err(|e| self.error(e))?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

impl Storage for Postgres {
    fn execute(&mut self, request: &StoreRequest) -> Result<StoreResult, StoreError> {
        ops::execute(self, request)
    }
}

/// Owned parameter values in the types the columns have (`BIGINT`, `TEXT`).
fn owned(params: &[Param<'_>]) -> Vec<Box<dyn ToSql + Sync>> {
    params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync> {
            match p {
                Param::Int(v) => Box::new(*v),
                Param::Text(v) => Box::new(v.to_string()),
                Param::OptText(v) => Box::new(v.map(str::to_string)),
            }
        })
        .collect()
}

impl Db for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        let result = self.client()?.batch_execute(sql);
        result.map_err(|e| self.error(e))
    }

    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        let values = owned(params);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        let result = self.client()?.execute(&statement, &refs);
        result.map_err(|e| self.error(e))
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Vec<Val>>, StoreError> {
        let statement = self.statement(sql)?;
        let values = owned(params);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        let result = self.client()?.query(&statement, &refs);
        let rows = result.map_err(|e| self.error(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for (i, column) in row.columns().iter().enumerate() {
                let corrupt = |e: postgres::Error| StoreError::Corrupt(format!("column {}: {e}", column.name()));
                let value = match *column.type_() {
                    Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(corrupt)?.map(Val::Int),
                    Type::INT4 => row.try_get::<_, Option<i32>>(i).map_err(corrupt)?.map(|v| Val::Int(v.into())),
                    Type::TEXT | Type::VARCHAR => row.try_get::<_, Option<String>>(i).map_err(corrupt)?.map(Val::Text),
                    // `void` (pg_advisory_xact_lock) and anything the schema does not use.
                    _ => None,
                };
                values.push(value.unwrap_or(Val::Null));
            }
            out.push(values);
        }
        Ok(out)
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        self.batch("BEGIN")
    }
}
