#!/usr/bin/env python3
"""Many short TCP connections, for bench/throughput.

  connrate.py serve PORT          accept and close, until killed
  connrate.py run HOST PORT SECS  open connections one after the other for
                                  SECS seconds; print connections/second

Each connection is a full handshake, then the client closes with an RST
(SO_LINGER 0) so no TIME_WAIT piles up and the ephemeral ports can be
reused. Every connection is a new conntrack entry, so this is the path
where a firewall's rules for new connections actually run.
"""

import socket
import struct
import sys
import time


def serve(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(4096)
    while True:
        c, _ = s.accept()
        c.close()


def run(host: str, port: int, secs: float) -> None:
    linger = struct.pack("ii", 1, 0)
    n = fails = 0
    end = time.monotonic() + secs
    start = time.monotonic()
    while time.monotonic() < end:
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        c.settimeout(1.0)
        try:
            c.connect((host, port))
            n += 1
        except OSError:
            fails += 1
        finally:
            c.close()
    elapsed = time.monotonic() - start
    if fails:
        print(f"connrate: {fails} connections failed", file=sys.stderr)
    print(f"{n / elapsed:.1f}")
    sys.exit(1 if fails > n // 100 else 0)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) == 5 and sys.argv[1] == "run":
        run(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
