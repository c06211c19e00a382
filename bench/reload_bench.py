#!/usr/bin/env python3
"""Answer latency of a steady load across `hookd reload` hand-offs: a hand-off must not show as a latency spike or a failed request.

Starts hookd (as a child subreaper, the way systemd holds a unit, so the
successors that outlive their parent are ours to reap), then runs the same
steady load twice: once with no reload, once with a `hookd reload` every
--every seconds. The load is paced (open loop per connection: each connection
sends on a fixed schedule, and a late answer delays only that connection),
signed GitHub-style, over keep-alive connections; every request's send and
answer times are kept, so the report can say:
  p50/p99/max latency, errors (refused, reset, timeout) and non-2xx per phase;
  max latency of requests in flight during a reload (reload start to its end
  + 100 ms); the longest time with no answer at all (the gap).
Usage: reload_bench.py --hookd BIN --config FILE --port N --body FILE --sig SIG
"""
import argparse
import array
import asyncio
import ctypes
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PR_SET_CHILD_SUBREAPER = 36


def subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


class Notify:
    """NOTIFY_SOCKET listener, as systemd is one: a thread reads every
    datagram at once (BARRIER=1 waits until its fd is closed), tracking
    READY=1 and MAINPID=."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.path = path
        self.main_pid = None
        self.ready = 0
        self.ready_at = []  # time.monotonic() of each READY=1
        self.barriers = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        fd_space = socket.CMSG_SPACE(64 * 4)
        while not self.stopped:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(65536, fd_space)
            except socket.timeout:
                continue
            except OSError:
                return
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                    for fd in fds:
                        os.close(fd)
            for line in data.decode(errors="replace").split("\n"):
                if line == "READY=1":
                    self.ready += 1
                    self.ready_at.append(time.monotonic())
                elif line == "BARRIER=1":
                    self.barriers += 1
                elif line.startswith("MAINPID="):
                    self.main_pid = int(line[len("MAINPID="):])

    def poll(self):
        """Kept for the call sites: the thread does the reading."""

    def close(self):
        self.stopped = True
        self.thread.join(timeout=1)
        self.sock.close()


async def one_connection(port, request, start, stop_at, period, results, offset):
    """Sends `request` every `period` seconds (from start + offset) until
    stop_at (a time, or a function giving it: a stop decided while the load
    runs), over one keep-alive connection, reconnecting after an error."""
    reader = writer = None
    n = 0
    while True:
        due = start + offset + n * period
        if due >= (stop_at() if callable(stop_at) else stop_at):
            break
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n += 1
        sent = time.monotonic()
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 5)
            writer.write(request)
            status_line = await asyncio.wait_for(reader.readline(), 5)
            if not status_line:
                raise EOFError("closed before an answer")
            status = int(status_line.split()[1])
            length, close = 0, False
            while True:
                line = await asyncio.wait_for(reader.readline(), 5)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if length:
                await asyncio.wait_for(reader.readexactly(length), 5)
            results.append((sent, time.monotonic(), status, None))
            if close:
                writer.close()
                reader = writer = None
        except (OSError, EOFError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            kind = {"EOFError": "closed_without_answer", "ConnectionResetError": "reset",
                    "ConnectionRefusedError": "refused", "TimeoutError": "timeout"}.get(type(e).__name__, type(e).__name__)
            results.append((sent, time.monotonic(), 0, kind))
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def load(args, request, duration, reload_fn=None):
    results = []
    start = time.monotonic() + 0.1
    stop_at = start + duration
    period = args.conns / args.rate
    tasks = [asyncio.create_task(one_connection(
        args.port, request, start, stop_at, period, results, i * period / args.conns))
        for i in range(args.conns)]
    reloads = []
    if reload_fn is not None:
        t = start + args.every
        while t < stop_at - 1.0:
            await asyncio.sleep(max(0, t - time.monotonic()))
            r0 = time.monotonic()
            code, out = await asyncio.get_running_loop().run_in_executor(None, reload_fn)
            reloads.append((r0, time.monotonic(), code, out))
            t += args.every
    await asyncio.gather(*tasks)
    return results, reloads


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def summarize(name, results, reloads):
    lat = [(b - a) * 1000 for a, b, s, e in results if e is None]
    errors = [e for _, _, _, e in results if e is not None]
    non2xx = sum(1 for _, _, s, e in results if e is None and not 200 <= s < 300)
    answers = sorted(b for _, b, s, e in results if e is None)
    gap = max((b - a for a, b in zip(answers, answers[1:])), default=0) * 1000
    line = (f"{name}: requests={len(results)} p50_ms={pct(lat, 50):.2f} p99_ms={pct(lat, 99):.2f} "
            f"max_ms={max(lat, default=float('nan')):.2f} errors={len(errors)} non2xx={non2xx} "
            f"longest_gap_ms={gap:.1f}")
    if errors:
        kinds = {}
        for e in errors:
            kinds[e] = kinds.get(e, 0) + 1
        line += " error_kinds=" + ",".join(f"{k}:{v}" for k, v in sorted(kinds.items()))
    if reloads:
        during = [(b - a) * 1000 for a, b, s, e in results if e is None and any(
            a <= r1 + 0.1 and b >= r0 for r0, r1, _, _ in reloads)]
        took = [(r1 - r0) * 1000 for r0, r1, _, _ in reloads]
        failed = sum(1 for *_, code, _ in reloads if code != 0)
        line += (f" reloads={len(reloads)} failed_reloads={failed} "
                 f"reload_cmd_ms_median={statistics.median(took):.0f} reload_cmd_ms_max={max(took):.0f} "
                 f"in_reload_requests={len(during)} in_reload_p99_ms={pct(during, 99):.2f} "
                 f"in_reload_max_ms={max(during, default=float('nan')):.2f}")
    return line


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hookd", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--body", required=True)
    p.add_argument("--sig", required=True)
    p.add_argument("--rate", type=float, default=1000, help="requests/s over all connections")
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--every", type=float, default=1.0, help="seconds between reloads")
    p.add_argument("--log", default="/dev/null")
    args = p.parse_args()
    subreaper()

    body = open(args.body, "rb").read()
    request = (f"POST /hooks/gh HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
               f"Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
               f"X-Hub-Signature-256: {args.sig}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    with tempfile.TemporaryDirectory(prefix="hookd-reload-") as d:
        notify = Notify(os.path.join(d, "notify.sock"))
        env = dict(os.environ, NOTIFY_SOCKET=notify.path)
        log = open(args.log, "ab")
        first = subprocess.Popen([args.hookd, "serve", "--config", args.config],
                                 env=env, stdout=log, stderr=log)
        notify.main_pid = first.pid
        try:
            deadline = time.monotonic() + 10
            while notify.ready == 0:
                if time.monotonic() > deadline or first.poll() is not None:
                    raise RuntimeError("hookd did not report READY=1")
                time.sleep(0.01)
                notify.poll()

            def reload_fn():
                r = subprocess.run([args.hookd, "reload", "--config", args.config],
                                   capture_output=True, timeout=15)
                return r.returncode, (r.stdout + r.stderr).decode(errors="replace").strip()

            base, _ = asyncio.run(load(args, request, args.duration))
            print(summarize("no_reload", base, []), flush=True)
            with_reload, reloads = asyncio.run(load(args, request, args.duration, reload_fn))
            notify.poll()
            print(summarize("with_reload", with_reload, reloads), flush=True)
            for r0, r1, code, out in reloads:
                if code != 0:
                    print(f"reload failed ({code}): {out}", flush=True)
            notify.poll()
            print(f"ready_messages={notify.ready} barriers={notify.barriers} final_main_pid={notify.main_pid}", flush=True)
        finally:
            notify.poll()
            for pid in {notify.main_pid, first.pid}:
                try:
                    os.kill(pid, signal.SIGTERM)
                except (ProcessLookupError, TypeError):
                    pass
            # Reap every child (successors were reparented to us), bounded.
            deadline = time.monotonic() + 20
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
