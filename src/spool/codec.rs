//! Conversions between Rust values and what the SQLite columns hold.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::Row;

use super::{Item, ItemState};

/// Unix milliseconds, saturating (times before 1970 become 0).
pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Inverse of [`to_ms`]; negative values clamp to the epoch.
pub(crate) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The spool's clock: the wall clock read once, when the process first asks,
/// and from then on advanced by `CLOCK_BOOTTIME` (which runs on through a
/// suspend but never jumps). Lease expiries and retry times are stored as
/// unix ms of this clock, so a wall clock set an hour ahead does not make the
/// running process's own leases look expired (a second claim of an item still
/// in flight), and one set an hour back does not add an hour to every retry
/// already scheduled. The price: timestamps a long-running hookd writes
/// differ from the wall clock by the steps it was set by since the process
/// started (NTP's slewing moves both clocks alike), and two processes started
/// on either side of a step disagree by that step (see RELIABILITY.md).
pub(crate) fn now() -> SystemTime {
    struct Anchor {
        wall: SystemTime,
        boot: Duration,
    }
    static ANCHOR: OnceLock<Option<Anchor>> = OnceLock::new();
    let anchor = ANCHOR.get_or_init(|| {
        // The wall clock first: boot time read a moment later puts this
        // clock a hair behind the wall clock, never ahead of it.
        let wall = SystemTime::now();
        Some(Anchor {
            wall,
            boot: boottime()?,
        })
    });
    // No CLOCK_BOOTTIME (not Linux): the wall clock as it is.
    let Some(a) = anchor else {
        return SystemTime::now();
    };
    match boottime() {
        Some(b) => a.wall + b.saturating_sub(a.boot),
        None => SystemTime::now(),
    }
}

fn boottime() -> Option<Duration> {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .ok()
        .map(Duration::from)
}

pub(crate) fn now_ms() -> i64 {
    to_ms(now())
}

/// `now - d` in unix ms, clamped at 0.
pub(crate) fn ms_ago(d: Duration) -> i64 {
    let d = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    now_ms().saturating_sub(d).max(0)
}

impl ToSql for ItemState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for ItemState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        s.parse()
            .map_err(|_| FromSqlError::Other(format!("unknown item state {s:?}").into()))
    }
}

/// Header list as one BLOB: per header, u32 LE name length, name, u32 LE value
/// length, value. Compact, and any byte survives (values need not be UTF-8).
pub(crate) fn encode_headers(headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let size: usize = headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
    let mut out = Vec::with_capacity(size);
    for (name, value) in headers {
        put_chunk(&mut out, name.as_bytes());
        put_chunk(&mut out, value);
    }
    out
}

fn put_chunk(out: &mut Vec<u8>, chunk: &[u8]) {
    // A header over 4 GiB cannot reach us (body limits are far smaller).
    let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&chunk[..len as usize]);
}

/// Inverse of [`encode_headers`]; `None` when the blob is malformed.
pub(crate) fn decode_headers(mut blob: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut headers = Vec::new();
    while !blob.is_empty() {
        let name = take_chunk(&mut blob)?;
        let value = take_chunk(&mut blob)?;
        headers.push((String::from_utf8(name.to_vec()).ok()?, value.to_vec()));
    }
    Some(headers)
}

fn take_chunk<'a>(blob: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len_bytes: [u8; 4] = blob.get(..4)?.try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let chunk = blob.get(4..4 + len)?;
    *blob = &blob[4 + len..];
    Some(chunk)
}

/// Columns [`item_from_row`] expects, in order.
pub(crate) const ITEM_COLUMNS: &str = "id, hook, dedup_id, received_at, headers, body, state, \
     attempts, next_attempt, last_error, lease_owner, lease_expiry";

/// Reads an [`Item`] from a row selected with [`ITEM_COLUMNS`].
pub(crate) fn item_from_row(row: &Row<'_>) -> rusqlite::Result<Item> {
    let id: i64 = row.get(0)?;
    let headers_blob: Vec<u8> = row.get(4)?;
    let headers = decode_headers(&headers_blob).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            4,
            rusqlite::types::Type::Blob,
            format!("item {id}: malformed headers").into(),
        )
    })?;
    let body: Vec<u8> = row.get(5)?;
    let attempts: i64 = row.get(7)?;
    Ok(Item {
        id,
        hook: row.get(1)?,
        dedup_id: row.get(2)?,
        received_at: from_ms(row.get(3)?),
        headers,
        body: Bytes::from(body),
        state: row.get(6)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt: from_ms(row.get(8)?),
        last_error: row.get(9)?,
        lease_owner: row.get(10)?,
        lease_expiry: row.get::<_, Option<i64>>(11)?.map(from_ms),
        lease_gen: None,
        delivery: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_any_bytes() {
        let headers = vec![
            ("x-a".to_string(), vec![0, 255, 128, b'\n']),
            (String::new(), Vec::new()),
            ("x-é".to_string(), b"plain".to_vec()),
        ];
        let blob = encode_headers(&headers);
        assert_eq!(decode_headers(&blob), Some(headers));
        assert_eq!(decode_headers(&blob[..blob.len() - 1]), None);
        assert_eq!(decode_headers(&[]), Some(Vec::new()));
    }

    #[test]
    fn ms_round_trip_and_clamp() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_ms(to_ms(t)), t);
        assert_eq!(from_ms(-5), UNIX_EPOCH);
        assert_eq!(to_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
