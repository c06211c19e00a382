#!/usr/bin/env python3
"""A legitimate webhook sender at a fixed rate, for runs under attack.

Sends one signed POST (GitHub style: HMAC-SHA256 of the body in
X-Hub-Signature-256) every 1/--rate s for --seconds, each on a new connection
from --source (so a per-address cap on the attacker's address does not apply
to it), each in its own thread so a stalled request never delays the next
one. A request succeeds when its status is in --ok within --timeout s.
Bounded: rate x seconds requests, each with a timeout.
Prints `LEGIT sent=N ok=N failed=N success_pct=P p50_ms= p99_ms= max_ms=`,
where the percentiles are over every request (a failure counts with the time
it took to fail) and `errors=` names what failed.
Usage: legit.py --url http://127.0.0.1:P/hooks/gh --body FILE --secret S
       [--rate 50] [--seconds 20] [--source 127.0.0.2] [--timeout 10] [--ok 202]
"""
import argparse
import collections
import hashlib
import hmac
import http.client
import threading
import time
import urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--body", required=True)
ap.add_argument("--secret", required=True)
ap.add_argument("--rate", type=float, default=50.0)
ap.add_argument("--seconds", type=float, default=20.0)
ap.add_argument("--source", default="127.0.0.2")
ap.add_argument("--timeout", type=float, default=10.0)
ap.add_argument("--ok", default="202")
args = ap.parse_args()

u = urllib.parse.urlsplit(args.url)
body = open(args.body, "rb").read()
ok_codes = {int(c) for c in args.ok.split(",")}
sig = "sha256=" + hmac.new(args.secret.encode(), body, hashlib.sha256).hexdigest()
lock = threading.Lock()
results = []  # (ok, ms, what)


def one(seq):
    t0 = time.monotonic()
    what = "ok"
    ok = False
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=args.timeout,
                                      source_address=(args.source, 0))
    try:
        conn.request("POST", u.path, body=body, headers={
            "Content-Type": "application/json", "X-GitHub-Event": "push",
            "X-GitHub-Delivery": f"legit-{time.time_ns()}-{seq}",
            "X-Hub-Signature-256": sig, "Connection": "close"})
        r = conn.getresponse()
        r.read()
        ok = r.status in ok_codes
        if not ok:
            what = f"status {r.status}"
    except TimeoutError:
        what = "timeout"
    except ConnectionRefusedError:
        what = "refused"
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        what = "reset"
    except OSError as e:
        what = f"oserror {e.errno}"
    except http.client.HTTPException as e:
        what = type(e).__name__
    finally:
        conn.close()
    ms = (time.monotonic() - t0) * 1000
    with lock:
        results.append((ok, ms, what))


total = int(args.rate * args.seconds)
threads = []
start = time.monotonic()
for i in range(total):
    at = start + i / args.rate
    time.sleep(max(0.0, at - time.monotonic()))
    t = threading.Thread(target=one, args=(i,), daemon=True)
    t.start()
    threads.append(t)
deadline = time.monotonic() + args.timeout + 5
for t in threads:
    t.join(max(0.0, deadline - time.monotonic()))
with lock:
    done = list(results)
lat = sorted(ms for _, ms, _ in done)
okn = sum(1 for ok, _, _ in done if ok)
# A thread still running past its timeout + 5 s counts as a failure of that length.
lost = total - len(done)
lat += [(args.timeout + 5) * 1000] * lost
lat.sort()
errs = collections.Counter(w for ok, _, w in done if not ok)
if lost:
    errs["unfinished"] = lost


def pct(p):
    return lat[min(len(lat) - 1, int(len(lat) * p))] if lat else 0.0


err_text = ",".join(f"{k.replace(' ', '_')}:{v}" for k, v in errs.items()) or "none"
print(f"LEGIT sent={total} ok={okn} failed={total - okn} "
      f"success_pct={100.0 * okn / total if total else 0:.1f} p50_ms={pct(0.5):.1f} "
      f"p99_ms={pct(0.99):.1f} max_ms={lat[-1] if lat else 0:.1f} "
      f"errors={err_text}",
      flush=True)
