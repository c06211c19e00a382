#!/usr/bin/env python3
"""Latency of a light ingest load while hookd does something else (a drain).

Sends one signed POST every --every ms on one keep-alive connection until
SIGTERM, then prints `PROBE requests=N p50_ms= p99_ms= max_ms= non2xx=N`.
Usage: probe.py --port N --body FILE --sig SIG [--every 5]
"""
import argparse
import http.client
import signal
import statistics
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--body", required=True)
ap.add_argument("--sig", required=True)
ap.add_argument("--every", type=float, default=5.0)
args = ap.parse_args()
body = open(args.body, "rb").read()
headers = {"Content-Type": "application/json", "X-GitHub-Event": "push",
           "X-Hub-Signature-256": args.sig}
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
lat, bad = [], 0
next_at = time.monotonic()
# Bounded: at most 10 minutes of probes even if nobody stops us.
deadline = next_at + 600
while not stop and time.monotonic() < deadline:
    t0 = time.monotonic()
    conn.request("POST", "/hooks/gh", body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    lat.append((time.monotonic() - t0) * 1000)
    bad += resp.status != 202
    next_at += args.every / 1000
    time.sleep(max(0.0, next_at - time.monotonic()))
lat.sort()
p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0
print(f"PROBE requests={len(lat)} p50_ms={statistics.median(lat) if lat else 0:.2f} "
      f"p99_ms={p99:.2f} max_ms={max(lat, default=0):.2f} non2xx={bad}", flush=True)
