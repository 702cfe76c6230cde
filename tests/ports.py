"""Ports for the servers tests start.

A port from `bind(("127.0.0.1", 0))` is one of the kernel's ephemeral ports: released, it can be
handed to any outgoing connection (another test's client) before the server binds it, and the
server fails with "Address already in use" (seen in CI: uWSGI in a fault test). Ports below the
ephemeral range are never handed out that way; a random one that binds now is free for the test."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    low = _ephemeral_low()
    first = max(1024, low - 12000)
    for _ in range(500):
        port = random.randint(first, low - 1)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # every one of them taken: fall back to the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
