#!/usr/bin/env python3
"""What a migration's write lock costs the old binary's senders during an upgrade.

An upgrade is a hand-off: the old hookd starts the new binary on the same
spool file, the successor migrates the schema (one immediate transaction:
the write lock for as long as the migration runs) while the old process
keeps accepting and committing webhooks, whose commits wait on that lock
(busy timeout 10 s, then the commit fails and the sender gets 503).

Runs `--bin` (a copy of --old) as a child subreaper with a NOTIFY_SOCKET, as
systemd runs a unit, waits for READY=1, starts a paced signed load (the
connections of reload_bench.py), then after --before seconds renames --new
over --bin and runs `hookd reload`. The migration time is from the reload
command to the successor's READY=1 (its start-up is part of it: tens of ms on
an empty spool). The load goes on --after seconds past that READY, then stops.
Prints one `MIGRATE key=value ...` line: the migration time, and for the
requests in flight during the migration (sent before READY, answered after
the reload began) and for all requests: count, p99 and max latency, non-2xx,
errors (no answer within the client's 5 s), and the longest time without an
acknowledgement (the write lock held: the old process commits nothing).
Each connection sends its next request after the previous answer, so a
request stuck on the lock holds back only its connection; the ones sent late
go out as soon as it frees and count with their own (short) latency. Then stops everything it started (bounded waits).
Usage: migrate.py --old BIN --new BIN --bin PATH --config FILE --port N --body FILE --sig SIG
"""
import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reload_bench import Notify, one_connection, pct, subreaper  # noqa: E402


def install(src, dst):
    """Replaces dst the way a package manager does: a new file renamed over
    the old name (the running process keeps its inode)."""
    tmp = dst + ".new"
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def stats(results):
    lat = [(b - a) * 1000 for a, b, s, e in results if e is None]
    acks = sorted(b for _, b, s, e in results if e is None and 200 <= s < 300)
    return {
        "requests": len(results),
        "p99_ms": round(pct(lat, 99), 1),
        "max_ms": round(max(lat, default=float("nan")), 1),
        "non2xx": sum(1 for _, _, s, e in results if e is None and not 200 <= s < 300),
        "errors": sum(1 for *_, e in results if e is not None),
        # The longest time in which no request was acknowledged: the old
        # process's writer committed nothing, so about how long the write
        # lock was held (a 503 at spool.commit_timeout is not an ack).
        "no_ack_ms": round(1000 * max((b - a for a, b in zip(acks, acks[1:])), default=0)),
    }


async def run_load(args, request, notify, reload_fn):
    results = []
    start = time.monotonic() + 0.1
    hard_stop = start + args.max_seconds
    stop = {"at": hard_stop}
    period = args.conns / args.rate
    tasks = [asyncio.create_task(one_connection(
        args.port, request, start, lambda: stop["at"], period, results, i * period / args.conns))
        for i in range(args.conns)]
    await asyncio.sleep(max(0, start + args.before - time.monotonic()))
    install(args.new, args.bin)
    ready_before = notify.ready
    r0 = time.monotonic()
    code, out = await asyncio.get_running_loop().run_in_executor(None, reload_fn)
    r1 = time.monotonic()
    while notify.ready <= ready_before and time.monotonic() < hard_stop and code == 0:
        await asyncio.sleep(0.005)
    # After a failed reload the READY=1 is the old process's own (back to
    # serving), not the successor's: no migration time then.
    ready = notify.ready_at[ready_before] if code == 0 and notify.ready > ready_before else None
    stop["at"] = min(hard_stop, time.monotonic() + args.after)
    await asyncio.gather(*tasks)
    return results, r0, r1, ready, code, out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--old", required=True, help="the old hookd binary")
    p.add_argument("--new", required=True, help="the new hookd binary")
    p.add_argument("--bin", required=True, help="the path the daemon runs from (replaced by --new)")
    p.add_argument("--config", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--body", required=True)
    p.add_argument("--sig", required=True)
    p.add_argument("--rate", type=float, default=200, help="requests/s over all connections")
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--before", type=float, default=2, help="seconds of load before the reload")
    p.add_argument("--after", type=float, default=2, help="seconds of load after the successor's READY")
    p.add_argument("--max-seconds", type=float, default=180, help="cap on the whole load")
    p.add_argument("--log", default="/dev/null")
    args = p.parse_args()
    subreaper()

    body = open(args.body, "rb").read()
    request = (f"POST /hooks/gh HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
               f"Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
               f"X-Hub-Signature-256: {args.sig}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    install(args.old, args.bin)

    with tempfile.TemporaryDirectory(prefix="hookd-migrate-") as d:
        notify = Notify(os.path.join(d, "notify.sock"))
        env = dict(os.environ, NOTIFY_SOCKET=notify.path)
        log = open(args.log, "ab")
        first = subprocess.Popen([args.bin, "serve", "--config", args.config],
                                 env=env, stdout=log, stderr=log)
        notify.main_pid = first.pid
        try:
            deadline = time.monotonic() + 120
            while notify.ready == 0:
                if time.monotonic() > deadline or first.poll() is not None:
                    raise RuntimeError("the old hookd did not report READY=1")
                time.sleep(0.01)

            def reload_fn():
                r = subprocess.run([args.bin, "reload", "--config", args.config],
                                   capture_output=True, timeout=args.max_seconds)
                return r.returncode, (r.stdout + r.stderr).decode(errors="replace").strip()

            results, r0, r1, ready, code, out = asyncio.run(run_load(args, request, notify, reload_fn))
            end = ready if ready is not None else r1
            during = [r for r in results if r[0] <= end and r[1] >= r0]
            try:
                old_exit = first.wait(timeout=60) if code == 0 else "running"
            except subprocess.TimeoutExpired:
                old_exit = "running"
            fields = {
                "migration_ms": round((ready - r0) * 1000) if ready is not None else "failed",
                "reload_cmd_ms": round((r1 - r0) * 1000),
                "reload_rc": code,
            }
            fields.update({f"during_{k}": v for k, v in stats(during).items()})
            fields.update({f"all_{k}": v for k, v in stats(results).items()})
            fields["acked"] = sum(1 for _, _, s, e in results if e is None and 200 <= s < 300)
            fields["old_exit"] = old_exit
            print("MIGRATE " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
            if code != 0:
                print(f"reload failed ({code}): {out}", flush=True)
        finally:
            for pid in {notify.main_pid, first.pid}:
                try:
                    os.kill(pid, signal.SIGTERM)
                except (ProcessLookupError, TypeError):
                    pass
            # Reap every child (the successor was reparented to us), bounded.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    time.sleep(0.05)
            else:
                for pid in {notify.main_pid, first.pid}:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, TypeError):
                        pass
            notify.close()


if __name__ == "__main__":
    sys.exit(main())
