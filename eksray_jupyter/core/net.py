"""Whether something listens at an address: the one TCP probe every layer uses."""

from __future__ import annotations

import socket


def port_open(address: str | int, timeout: float = 0.25) -> bool:
    """Whether ``[scheme://]host:port`` (or a port on 127.0.0.1) accepts a TCP connection in ``timeout`` s."""
    if isinstance(address, int):
        host, port = "127.0.0.1", str(address)
    else:
        hostport = address.split("://", 1)[-1].rstrip("/")
        host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return False
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False
