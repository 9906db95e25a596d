"""The sandbox's addresses: each region's load balancer and API server on loopback addresses of
their own, every region's servers on one port, so a URL with a name and that port works against
whichever address DNS returns (as https://name works against whichever ALB address it gets).

Linux answers on all of 127.0.0.0/8. macOS answers only on 127.0.0.1 unless aliases are added;
`require_addresses` detects that and says what to run instead of failing obscurely.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Sequence

__all__ = ["listening_socket", "region_address", "require_addresses", "sockets_on_one_port"]


def region_address(index: int, host: int) -> str:
    """Region `index`'s address number `host`: 127.0.<10+index>.<host>."""
    if not 0 <= index < 200 or not 1 <= host < 255:
        raise ValueError(f"no sandbox address for region {index}, host {host}")
    return f"127.0.{10 + index}.{host}"


def listening_socket(host: str, port: int = 0, *, backlog: int = 128) -> socket.socket:
    """A TCP socket bound to (host, port) and listening; port 0 lets the OS choose."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def sockets_on_one_port(hosts: Sequence[str], *, attempts: int = 20) -> list[socket.socket]:
    """Listening sockets on every host, all on the same port (the first host's, chosen by the OS).

    If another program holds that port on one of the other hosts, every socket is closed and
    another port is tried: ports are taken by binding, never guessed and released.
    """
    for _ in range(attempts):
        first = listening_socket(hosts[0])
        port = int(first.getsockname()[1])
        taken = [first]
        try:
            for host in hosts[1:]:
                taken.append(listening_socket(host, port))
        except OSError as exc:
            for sock in taken:
                sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        return taken
    raise OSError(f"no port free on all of {', '.join(hosts)} after {attempts} attempts")


def require_addresses(hosts: Sequence[str]) -> None:
    """Fail with instructions when this machine does not answer on the sandbox's addresses."""
    missing = []
    for host in hosts:
        try:
            listening_socket(host).close()
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:
                raise
            missing.append(host)
    if not missing:
        return
    how = (
        "; ".join(f"sudo ifconfig lo0 alias {h} up" for h in missing)
        if sys.platform == "darwin"
        else "; ".join(f"sudo ip addr add {h}/8 dev lo" for h in missing)
    )
    raise SystemExit(
        f"this machine does not answer on {', '.join(missing)} (the sandbox gives each region's load "
        f"balancer its own loopback address; Linux answers on all of 127.0.0.0/8, macOS only on "
        f"127.0.0.1): run {how}"
    )
