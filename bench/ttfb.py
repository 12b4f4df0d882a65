#!/usr/bin/env python3
"""Time to first streamed byte: paced streaming requests over one keep-alive connection.

For each request it records, from the moment the request bytes are written:
  first_byte  - the first byte of the response (status line),
  first_data  - the first byte of the first SSE event (`data:`), the figure reported as TTFB,
  total       - the end of the chunked body (the terminating `0\\r\\n\\r\\n` after `[DONE]`).
Prints one JSON object with percentiles in milliseconds. Only loopback URLs are accepted.
"""
import argparse
import json
import socket
import sys
import time
from urllib.parse import urlsplit


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--body", required=True)
    ap.add_argument("-H", dest="headers", action="append", default=[])
    a = ap.parse_args()

    u = urlsplit(a.url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("ttfb.py: loopback targets only")
    port = u.port or 80
    body = a.body.encode()
    head = [
        f"POST {u.path or '/'} HTTP/1.1",
        f"Host: {u.hostname}:{port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(body)}",
    ] + a.headers
    req = ("\r\n".join(head) + "\r\n\r\n").encode() + body

    def connect():
        s = socket.create_connection((u.hostname, port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    s = connect()
    first_byte, first_data, total = [], [], []
    errors = 0
    interval = 1.0 / a.rate
    next_at = time.perf_counter()
    for i in range(a.warmup + a.count):
        now = time.perf_counter()
        if next_at > now:
            time.sleep(next_at - now)
        next_at += interval
        buf = b""
        t0 = time.perf_counter()
        try:
            s.sendall(req)
            tb = td = None
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                t = time.perf_counter()
                if tb is None:
                    tb = t
                buf += chunk
                if len(buf) >= 12 and not buf.startswith(b"HTTP/1.1 200"):
                    raise ValueError(buf[:120])
                if td is None and b"data:" in buf:
                    td = t
                if buf.endswith(b"0\r\n\r\n") and b"[DONE]" in buf:
                    break
                if len(buf) > 1 << 20:
                    raise ValueError("answer too large")
            if not buf.startswith(b"HTTP/1.1 200"):
                raise ValueError(buf[:80])
            te = time.perf_counter()
        except Exception as e:  # noqa: BLE001 - counted, connection renewed
            errors += 1
            if errors <= 3:
                print(f"ttfb.py: request failed: {e!r}", file=sys.stderr)
            if errors >= 20 and not first_data:
                print("ttfb.py: giving up: 20 failures and no success", file=sys.stderr)
                break
            s.close()
            s = connect()
            continue
        if i >= a.warmup:
            first_byte.append((tb - t0) * 1000)
            first_data.append((td - t0) * 1000)
            total.append((te - t0) * 1000)
    s.close()
    out = {"kind": "ttfb", "rate": a.rate, "count": len(first_data), "errors": errors}
    for name, xs in (("first_byte_ms", first_byte), ("first_data_ms", first_data), ("total_ms", total)):
        out[name] = {"p50": pct(xs, 50), "p99": pct(xs, 99), "p99.9": pct(xs, 99.9),
                     "mean": (sum(xs) / len(xs)) if xs else None}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
