#!/usr/bin/python3
"""Signed-webhook load generator and delivery checker for the hookd e2e suite.

  load.py run --url URL --secret-file F --out OUT.jsonl [--threads 4] [--rate 40]
              [--max-requests 3000] [--max-seconds 120] [--stop-file F] [--cafile CA]
      Sends GitHub-style webhooks (HMAC-SHA256 of the body in X-Hub-Signature-256, a
      unique X-GitHub-Delivery) from a few threads at a bounded total rate, one new
      connection per request, until the stop file appears or a bound is hit. One JSON
      line per request in OUT; a summary JSON object on stdout at the end.
      An https:// URL is verified against CA (PEM) only, with a full handshake on
      every request; a failed handshake counts as a failed request ("tls").
  load.py one --url URL --secret-file F [--cafile CA]
      One signed request; prints {"status": .., "body": ..}.
  load.py verify --record RECORD.jsonl --deadline SECONDS OUT.jsonl...
      Waits (up to the deadline) until every request acked with 202 in the OUT files has
      a "delivered" line in the upstream's RECORD (matched on its X-GitHub-Delivery);
      prints a summary (missing ones by hookd id); exit 1 if any is missing.
"""
import argparse
import hashlib
import hmac
import http.client
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid


def tls_context(cafile):
    """Trust only the test CA (PEM file); None for plain HTTP."""
    if not cafile:
        return None
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def signed_request(url, secret, seq, ctx=None):
    """POST one signed webhook; returns a result dict (never raises)."""
    u = urllib.parse.urlsplit(url)
    gh = str(uuid.uuid4())
    body = json.dumps({"seq": seq, "delivery": gh, "pad": "x" * 200}).encode()
    sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": gh,
        "X-Hub-Signature-256": sig,
        "Connection": "close",
    }
    res = {"seq": seq, "gh": gh, "t0": time.time()}
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=20,
                                           context=ctx or ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=20)
    try:
        conn.request("POST", u.path or "/", body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        res["status"] = r.status
        res["body"] = data.decode("utf-8", "replace")[:300]
        if r.status in (200, 202):
            try:
                res["id"] = json.loads(data)["id"]
            except (ValueError, KeyError, TypeError):
                res["error"] = "2xx without a JSON id"
    except ConnectionRefusedError:
        res["error"] = "refused"
    except ssl.SSLError as e:
        res["error"] = f"tls: {e}"
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        res["error"] = "reset"
    except socket.timeout:
        res["error"] = "timeout"
    except OSError as e:
        res["error"] = f"oserror: {e}"
    except http.client.HTTPException as e:
        res["error"] = f"http: {e!r}"
    finally:
        conn.close()
    res["latency"] = round(time.time() - res["t0"], 4)
    return res


def cmd_run(a):
    secret = open(a.secret_file, "rb").read().strip()
    ctx = tls_context(a.cafile)
    out = open(a.out, "w", encoding="utf-8")
    lock = threading.Lock()
    seq = [0]
    start = time.time()
    interval = a.threads / a.rate  # each thread's period, so the total is ~rate
    results = []

    def stop_now():
        return (os.path.exists(a.stop_file) if a.stop_file else False) or \
            time.time() - start > a.max_seconds

    def worker():
        nxt = time.time()
        while not stop_now():
            with lock:
                if seq[0] >= a.max_requests:
                    return
                seq[0] += 1
                n = seq[0]
            r = signed_request(a.url, secret, n, ctx)
            with lock:
                results.append(r)
                out.write(json.dumps(r) + "\n")
                out.flush()
            nxt += interval
            time.sleep(max(0.0, nxt - time.time()))

    threads = [threading.Thread(target=worker) for _ in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()
    s = summarize(results, time.time() - start)
    print(json.dumps(s))
    # The same numbers as key=value for the shell.
    print(" ".join(f"{k}={v}" for k, v in s.items() if isinstance(v, (int, float))))


def summarize(results, secs):
    lat = sorted(r["latency"] for r in results)
    s = {
        "total": len(results),
        "acked": sum(1 for r in results if r.get("status") == 202 and "id" in r),
        "dup": sum(1 for r in results if r.get("status") == 200),
        "refused": sum(1 for r in results if r.get("error") == "refused"),
        "reset": sum(1 for r in results if r.get("error") == "reset"),
        "timeout": sum(1 for r in results if r.get("error") == "timeout"),
        "seconds": round(secs, 2),
    }
    bad = [r for r in results if "error" in r or r.get("status") not in (200, 202)]
    s["failed"] = len(bad)
    s["non2xx"] = sorted({r["status"] for r in bad if "status" in r and r["status"] not in (200, 202)})
    s["first_failures"] = [{k: r.get(k) for k in ("seq", "status", "error", "body")} for r in bad[:3]]
    if lat:
        s["p50"] = lat[len(lat) // 2]
        s["p99"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        s["max"] = lat[-1]
    return s


def cmd_one(a):
    secret = open(a.secret_file, "rb").read().strip()
    r = signed_request(a.url, secret, 0, tls_context(a.cafile))
    print(json.dumps(r))
    return 0 if r.get("status") == 202 else 1


def read_jsonl(path):
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line being written right now
    except FileNotFoundError:
        pass
    return out


def cmd_verify(a):
    # Keyed on each request's own X-GitHub-Delivery (a uuid4), which hookd
    # forwards: hookd's ids start again at 1 on a fresh spool (check 6 gives
    # the old package one), so an id can name two requests of one run.
    acked = {}
    for p in a.outs:
        for r in read_jsonl(p):
            if r.get("status") in (200, 202) and "id" in r:
                acked[r["gh"]] = str(r["id"])
    deadline = time.time() + a.deadline
    while True:
        counts = {}
        for e in read_jsonl(a.record):
            if e.get("event") == "delivered" and e.get("gh"):
                counts[e["gh"]] = counts.get(e["gh"], 0) + 1
        missing = [i for gh, i in acked.items() if gh not in counts]
        if not missing or time.time() > deadline:
            break
        time.sleep(0.3)
    dups = sum(1 for gh in acked if counts.get(gh, 0) > 1)
    print(json.dumps({"acked": len(acked), "missing": len(missing), "missing_ids": missing[:5],
                      "delivered_twice": dups}))
    return 1 if missing else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--url", required=True)
    r.add_argument("--secret-file", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--threads", type=int, default=4)
    r.add_argument("--rate", type=float, default=40.0)
    r.add_argument("--max-requests", type=int, default=3000)
    r.add_argument("--max-seconds", type=float, default=120.0)
    r.add_argument("--stop-file")
    r.add_argument("--cafile")
    o = sub.add_parser("one")
    o.add_argument("--url", required=True)
    o.add_argument("--secret-file", required=True)
    o.add_argument("--cafile")
    v = sub.add_parser("verify")
    v.add_argument("--record", required=True)
    v.add_argument("--deadline", type=float, default=60.0)
    v.add_argument("outs", nargs="+")
    a = ap.parse_args()
    return {"run": cmd_run, "one": cmd_one, "verify": cmd_verify}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
