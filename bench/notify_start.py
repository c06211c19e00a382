#!/usr/bin/env python3
"""Time hookd's start to READY=1, several times, through a NOTIFY_SOCKET.

Binds a unix datagram socket, starts `HOOKD serve --config CONFIG` with
NOTIFY_SOCKET pointing at it, and measures from just before the spawn to the
arrival of a datagram carrying READY=1. Then reads VmRSS from /proc (after
--settle seconds), sends SIGTERM and waits for the exit (bounded).
Before each start, --fresh PATH removes PATH and its -wal/-shm (empty spool).

Prints one line per start and a final `STARTUP median_ms=...` line.
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def one_start(args, sock_path, sock):
    if args.fresh:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(args.fresh + suffix)
            except FileNotFoundError:
                pass
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    with open(args.log, "ab") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen([args.hookd, "serve", "--config", args.config],
                                env=env, stdout=log, stderr=log)
    ready_ms = None
    try:
        deadline = t0 + args.timeout
        while ready_ms is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no READY=1 within {args.timeout}s")
            if proc.poll() is not None:
                raise RuntimeError(f"hookd exited with {proc.returncode} before READY=1")
            sock.settimeout(min(left, 0.2))
            try:
                msg = sock.recv(65536)
            except socket.timeout:
                continue
            if b"READY=1" in msg.split(b"\n"):
                ready_ms = (time.monotonic() - t0) * 1000
        time.sleep(args.settle)
        rss = vm_rss_kib(proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=args.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return ready_ms, rss, proc.returncode


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hookd", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--fresh", help="spool file to delete before each start")
    p.add_argument("--settle", type=float, default=0.3,
                   help="seconds after READY before reading VmRSS")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--stop-timeout", type=float, default=15.0)
    p.add_argument("--log", default="/dev/null")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="hookd-notify-") as d:
        sock_path = os.path.join(d, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(sock_path)
        times, rss_all = [], []
        for i in range(args.runs):
            # Drop datagrams left over from the previous instance's stop.
            sock.setblocking(False)
            try:
                while True:
                    sock.recv(65536)
            except BlockingIOError:
                pass
            sock.setblocking(True)
            ready_ms, rss, code = one_start(args, sock_path, sock)
            times.append(ready_ms)
            rss_all.append(rss)
            print(f"start {i + 1}: ready_ms={ready_ms:.1f} rss_kib={rss} exit={code}", flush=True)
        print("STARTUP median_ms=%.1f runs_ms=%s median_rss_kib=%d" % (
            statistics.median(times), ",".join("%.1f" % t for t in times),
            statistics.median(rss_all)))


if __name__ == "__main__":
    sys.exit(main())
