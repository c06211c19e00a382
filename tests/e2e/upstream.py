#!/usr/bin/python3
"""Test upstream for the hookd e2e suite: records every delivery hookd forwards to it.

Runs inside the container (systemd-run). Each POST appends one JSON line to --record:
  {"t": unix time, "event": "delivered" | "slow_started", "id": Hookd-Delivery-Id,
   "gh": X-GitHub-Delivery, "attempt": Hookd-Attempt, "path": ..., "len": body bytes}
POST /slow/<seconds>: the first time a delivery id arrives here it is held <seconds> and
answered 503 (hookd is expected to give up on it during a drain); later attempts are
answered 200 at once. Every other path answers 200 at once. GET /ping answers 200.
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SLOW_SEEN = set()


def record(path, entry):
    line = json.dumps(entry, sort_keys=True) + "\n"
    with LOCK:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # the journal gets our records, not access logs
        pass

    def reply(self, code, text=b"ok\n"):
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def do_GET(self):
        self.reply(200 if self.path == "/ping" else 404)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        entry = {
            "t": time.time(),
            "id": self.headers.get("Hookd-Delivery-Id"),
            "gh": self.headers.get("X-GitHub-Delivery"),
            "attempt": self.headers.get("Hookd-Attempt"),
            "path": self.path,
            "len": len(body),
        }
        if self.path.startswith("/slow/"):
            key = entry["id"] or entry["gh"]
            with LOCK:
                first = key not in SLOW_SEEN
                SLOW_SEEN.add(key)
            if first:
                record(self.server.record_path, dict(entry, event="slow_started"))
                time.sleep(float(self.path.split("/")[2]))
                try:
                    self.reply(503, b"held too long\n")
                except OSError:
                    pass  # hookd gave up on this attempt and closed the connection
                return
        record(self.server.record_path, dict(entry, event="delivered"))
        self.reply(200)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--record", required=True)
    args = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    srv.record_path = args.record
    srv.serve_forever()


if __name__ == "__main__":
    main()
