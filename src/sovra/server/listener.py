"""Listening sockets for `sovra serve --workers N`: one SO_REUSEPORT socket per worker process.

One socket shared by every worker lets whichever worker wakes first accept every pending
connection (asyncio accepts up to the backlog per wake-up): measured on two workers, 16
keep-alive connections opened together all landed on one of them, which then served alone
while the other idled. With a socket of its own per worker, bound with SO_REUSEPORT, the kernel
spreads new connections over the workers by a hash of their addresses, and a worker that exits
drops out of the spread. TCP_NODELAY is set on each (Linux copies it to accepted connections;
without it Nagle and delayed ACKs added ~40 ms to every keep-alive response).
"""

from __future__ import annotations

import socket
from typing import Any


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """Bind and listen on (host, port) in this process, sharing the port with the others."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class WorkerListener(socket.socket):
    """What the supervisor hands each worker in place of a shared socket.

    Never bound in the supervisor (so the supervisor, which accepts nothing, takes no share of
    the connections); pickled into a spawned worker it becomes that worker's own `listen`
    socket.
    """

    def __init__(self, host: str, port: int, backlog: int) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.address = (host, port, backlog)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[str, int, int]]:
        return (listen, self.address)
