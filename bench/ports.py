"""Ports for servers that can't report the port they bound (nginx, redis-server, SeaweedFS)."""

import random
import socket

# Linux hands out source ports (of outgoing connections, and of port-0 binds) from 32768 up:
# a port below that is never taken by one of those between our check and the server's bind.
UNEPHEMERAL_PORTS = (20000, 32000)


def unused_ports(count: int) -> list[int]:
    """Ports free right now, below the kernel's ephemeral range. Another process may still take one
    before our server binds it: whoever starts the server tries again with new ones then."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(*UNEPHEMERAL_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports
