#!/usr/bin/env python3
"""Times the v4 -> v5 spool migration (the items table rebuild) on a v4
spool of N items, as `hookd serve` runs it: one immediate transaction in
WAL mode with synchronous=FULL. The migrations' SQL is read from
src/spool/schema.rs, so this measures exactly what the binary executes.

usage: bench/migrate_v5.py N [DIR] [--rebuild]
  DIR: where the spool file goes (/var/tmp)
  --rebuild: time the rebuild v5 first had instead (v4's table rebuild with
  'routed' in the CHECK), for comparison
"""
import os
import re
import sqlite3
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
src = open(os.path.join(here, "..", "src", "spool", "schema.rs")).read()
migrations = re.findall(r'r#"(.*?)"#', src, re.S)
assert len(migrations) == 5, len(migrations)

args = [a for a in sys.argv[1:] if a != "--rebuild"]
rebuild = "--rebuild" in sys.argv
n = int(args[0])
directory = args[1] if len(args) > 1 else "/var/tmp"
path = os.path.join(directory, f"hookd-migrate-{n}.db")
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(path + suffix):
        os.remove(path + suffix)

conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA synchronous = NORMAL")
for sql in migrations[:4]:
    conn.executescript(sql)
conn.execute("PRAGMA user_version = 4")
# Half done, half pending, 600-byte bodies, a few headers: the fault
# campaign's requests.
body = b"x" * 600
headers = b"\x0c\x00\x00\x00content-type\x10\x00\x00\x00application/json"
conn.execute("BEGIN")
conn.executemany(
    "INSERT INTO items (hook, dedup_id, received_at, headers, body, state, attempts, "
    "next_attempt, updated_at) VALUES ('gh', ?1, ?2, ?3, ?4, ?5, 0, ?2, ?2)",
    (
        (f"d-{i}", 1_700_000_000_000 + i, headers, body, "done" if i % 2 else "pending")
        for i in range(n)
    ),
)
conn.execute(
    "INSERT INTO item_counts (hook, state, n) SELECT hook, state, count(*) FROM items GROUP BY 1, 2"
)
conn.execute("COMMIT")
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
size = os.path.getsize(path)
conn.close()

conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA synchronous = FULL")
step = migrations[4]
if rebuild:
    step = (
        migrations[3]
        .replace("items_v4", "items_v5")
        .replace("'filtered')", "'filtered', 'routed')")
    )
started = time.monotonic()
# One script: executescript would commit a transaction begun outside it.
conn.executescript("BEGIN IMMEDIATE;" + step + "PRAGMA user_version = 5; COMMIT;")
took = time.monotonic() - started
how = "rebuild" if rebuild else "schema edit"
print(f"{n} items, {size / 1e6:.0f} MB: v4 -> v5 migration ({how}) {took:.2f} s, write lock held throughout")
conn.close()
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(path + suffix):
        os.remove(path + suffix)
