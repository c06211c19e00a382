#!/usr/bin/env python3
"""Peak memory of hookd with many bodies held at once.

Starts `hookd serve` (binary $1, default target/release/hookd) with the default
max_body (1 MiB) and max_buffered (256 MiB, or $MAX_BUFFERED), opens $CONNS
(300) connections that each send all but the last byte of a 1 MiB body, waits
until hookd has read what it will, and prints VmHWM from /proc/PID/status.
Every wait has a deadline; everything goes to 127.0.0.1.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/hookd"
CONNS = int(os.environ.get("CONNS", "300"))
BODY = 1 << 20
MAX_BUFFERED = os.environ.get("MAX_BUFFERED", "")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def main():
    work = tempfile.mkdtemp(prefix="hookd-rss.")
    port = free_port()
    extra = f'max_buffered = "{MAX_BUFFERED}"\n' if MAX_BUFFERED else ""
    cfg = os.path.join(work, "hookd.toml")
    with open(cfg, "w") as f:
        f.write(
            f"""[server]
listen = ["127.0.0.1:{port}"]
read_timeout = "120s"
control_socket = "{work}/control.sock"
{extra}
[spool]
path = "{work}/spool.db"

[log]
format = "plain"
level = "warn"

[[hook]]
name = "big"
verify = {{ scheme = "none" }}
action = {{ forward = "http://127.0.0.1:9/", timeout = "10s" }}
"""
        )
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET")}
    p = subprocess.Popen([BIN, "serve", "--config", cfg], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("hookd did not listen within 10 s")
                time.sleep(0.05)
        before = status(p.pid, "VmRSS")
        head = (
            f"POST /hooks/big HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n"
        ).encode()
        chunk = b"x" * (BODY - 1)
        socks, refused = [], 0
        for _ in range(CONNS):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.settimeout(10)
            try:
                s.sendall(head + chunk)
            except OSError:
                # Answered 503 and closed before the body was taken; the
                # answer is still read below.
                pass
            socks.append(s)
        # hookd reads what the kernel buffers hold; let it settle (bounded).
        last, deadline = -1, time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = status(p.pid, "VmRSS")
            if now == last:
                break
            last = now
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(4096).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except OSError:
                pass
        hwm = status(p.pid, "VmHWM")
        print(
            f"{CONNS} connections x {BODY - 1} bytes held: VmHWM {hwm / 1024:.0f} MiB "
            f"(RSS before {before / 1024:.1f} MiB), {refused} answered 503 busy, "
            f"max_buffered {MAX_BUFFERED or 'default (256 MiB)'}"
        )
        for s in socks:
            s.close()
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
