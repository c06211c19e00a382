//! The PostgreSQL spool's schema: created and migrated under an advisory
//! lock, so nodes starting together do not race, in one transaction, so a
//! failed migration leaves the previous version whole.
//!
//! Versions are additive. `hookd_schema.min_compatible` is the oldest hookd
//! schema version that can still run against the database: a node refuses
//! a database whose `min_compatible` is above its own [`VERSION`], and runs
//! against a newer one otherwise, which is what lets a rolling upgrade keep
//! old nodes serving while a new one has migrated.

use tokio_postgres::Client;

use crate::spool::{NotASpool, SpoolError};

/// The schema version this hookd writes.
pub(crate) const VERSION: i32 = 1;

/// Version 1, the whole layout.
const V1: &str = include_str!("schema.sql");

/// Key of the transaction-scoped advisory lock every migration holds
/// ("hookd" in ASCII).
const MIGRATION_LOCK: i64 = 0x0068_6f6f_6b64;

/// The oldest server the layout and statements are tested on (Debian 12's).
const MIN_SERVER_VERSION_NUM: i32 = 150_000;

/// Refuses a server older than [`MIN_SERVER_VERSION_NUM`], by name, before
/// anything is created on it.
async fn check_server(client: &Client) -> Result<(), SpoolError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
            &[],
        )
        .await?;
    let (num, name): (i32, String) = (row.try_get(0)?, row.try_get(1)?);
    if num < MIN_SERVER_VERSION_NUM {
        return Err(SpoolError::NotASpool(NotASpool::ServerTooOld(name)));
    }
    Ok(())
}

/// What [`migrate`] found before it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    /// `None`: the database had no hookd schema.
    pub version: Option<i32>,
}

/// Creates the schema in an empty database, or migrates an older one to
/// [`VERSION`]. Refuses a database used by something else (tables of ours
/// by name, no `hookd_schema`) and one whose `min_compatible` is above us.
pub(crate) async fn migrate(client: &mut Client) -> Result<Found, SpoolError> {
    check_server(client).await?;
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let found = read_version(&txn).await?;
    match found {
        None => {
            let ours: i64 = txn
                .query_one(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() \
                     AND tablename IN ('requests', 'deliveries', 'instances', 'depth_counts')",
                    &[],
                )
                .await?
                .get(0);
            if ours > 0 {
                return Err(SpoolError::NotASpool(NotASpool::Foreign));
            }
            txn.batch_execute(V1).await?;
        }
        Some((version, min_compatible)) => check(version, min_compatible)?,
    }
    txn.commit().await?;
    Ok(Found {
        version: found.map(|(v, _)| v),
    })
}

/// For the admin CLI, which never creates or migrates: the schema must be
/// there and one this hookd can use.
#[allow(dead_code)] // the admin CLI's, wired with it
pub(crate) async fn check_current(client: &Client) -> Result<(), SpoolError> {
    match read_version(client).await? {
        None => Err(SpoolError::NotASpool(NotASpool::NoSchema)),
        Some((version, _)) if version < VERSION => Err(SpoolError::SchemaTooOld {
            found: version as u32,
        }),
        Some((version, min_compatible)) => check(version, min_compatible),
    }
}

fn check(version: i32, min_compatible: i32) -> Result<(), SpoolError> {
    if version < 1 {
        return Err(SpoolError::NotASpool(NotASpool::BadVersion(version.into())));
    }
    if min_compatible > VERSION {
        return Err(SpoolError::SchemaTooNew {
            found: version as u32,
        });
    }
    Ok(())
}

/// `(version, min_compatible)` of the newest migration applied, `None` when
/// the database has no hookd schema.
async fn read_version(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Option<(i32, i32)>, SpoolError> {
    let present: bool = client
        .query_one("SELECT to_regclass('hookd_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !present {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT version, min_compatible FROM hookd_schema ORDER BY version DESC LIMIT 1",
            &[],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}
