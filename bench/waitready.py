#!/usr/bin/env python3
"""waitready.py URL LIMIT_SECONDS [--armed FILE]: polls URL every millisecond until it answers
200; prints the epoch nanoseconds of that answer (exit 0), or exits 1 after LIMIT_SECONDS.
With --armed, creates FILE once polling has begun, so a caller can start the server after the
poller's own start-up and time only the server's."""
import socket
import sys
import time
from urllib.parse import urlsplit


def main():
    url, limit = sys.argv[1], float(sys.argv[2])
    armed = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--armed" else None
    u = urlsplit(url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("waitready.py: loopback targets only")
    req = f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.hostname}\r\nConnection: close\r\n\r\n".encode()
    if armed:
        open(armed, "w").close()
    end = time.time() + limit
    while time.time() < end:
        try:
            with socket.create_connection((u.hostname, u.port or 80), timeout=1) as s:
                s.sendall(req)
                head = s.recv(64)
                if head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"):
                    print(time.time_ns())
                    return 0
        except OSError:
            pass
        time.sleep(0.001)
    return 1


if __name__ == "__main__":
    sys.exit(main())
