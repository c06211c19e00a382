#!/usr/bin/env python3
"""An upstream that accepts TCP connections and never answers.

hookd's ingest benchmark forwards to it so that delivery holds one item in
flight (concurrency 1, long timeout) and takes no CPU or spool writes away
from ingest. Usage: blackhole.py PORT. Runs until SIGTERM.
"""
import signal
import socket
import sys

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
held = []
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    conn, _ = s.accept()
    held.append(conn)  # keep it open, read nothing, answer nothing
