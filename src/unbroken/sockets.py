"""Listening sockets: parsed from addresses, bound once by the master, inherited by workers.

Why the master binds and never closes them during a reload: every worker
generation accepts from the same kernel queue, so a connection waiting in the
backlog survives any worker's exit. Per-worker SO_REUSEPORT sockets have a queue
each and drop what is queued when their worker exits (measured on gunicorn
`--reuse-port`: 12-13 resets per two reloads; see shared/ANCHORS.md §0), so we
never set it.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass

from unbroken.errors import UsageError


class AddressError(UsageError, ValueError):
    """An address cannot be parsed or bound; the message names it."""


@dataclass(frozen=True)
class TCPAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class UnixAddress:
    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True)
class FDAddress:
    fd: int

    def __str__(self) -> str:
        return f"fd://{self.fd}"


Address = TCPAddress | UnixAddress | FDAddress


def parse_address(text: str) -> Address:
    """`host:port`, `[v6]:port`, `:port`, `unix:/path` or `fd://N`."""
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not path:
            raise AddressError(f"bind {text!r}: empty unix socket path")
        return UnixAddress(path)
    if text.startswith("fd://"):
        try:
            return FDAddress(int(text[len("fd://"):]))
        except ValueError:
            raise AddressError(f"bind {text!r}: fd:// needs a number") from None
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise AddressError(f"bind {text!r}: expected host:port, unix:/path or fd://N")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise AddressError(f"bind {text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise AddressError(f"bind {text!r}: port out of range")
    return TCPAddress(host or "0.0.0.0", port)


def bind(address: Address, backlog: int) -> socket.socket:
    """Open a listening socket for `address`; errors say which address and why."""
    if isinstance(address, FDAddress):
        return _adopt(address)
    if isinstance(address, UnixAddress):
        return _bind_unix(address, backlog)
    return _bind_tcp(address, backlog)


def _bind_tcp(address: TCPAddress, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR lets a restarted master bind while old connections sit in
        # TIME_WAIT; it does not let two listeners share the port on Linux.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address.host, address.port))
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise AddressError(f"cannot bind {address}: {_describe(error)}") from None
    return sock


def _bind_unix(address: UnixAddress, backlog: int) -> socket.socket:
    remove_stale_unix_socket(address.path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o077)
    os.umask(unix_socket_umask(umask))  # the mode is set at bind: no chmod-after window
    try:
        sock.bind(address.path)
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise AddressError(f"cannot bind {address}: {_describe(error)}") from None
    finally:
        os.umask(umask)
    return sock


def unix_socket_umask(umask: int) -> int:
    """A listening unix socket is 0660: its owner and its group (a proxy's user in the
    service's group) may connect, whatever the group bits of the umask (the usual 022
    would give 0755, which only the owner can connect to: nginx answers 502); others may
    connect too (0666) only if the umask lets them write (`--umask 0` or `002`)."""
    return 0o117 if umask & 0o002 else 0o111


def remove_stale_unix_socket(path: str) -> None:
    """Unlink a leftover socket file, but never a live socket or a non-socket."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise AddressError(f"cannot bind unix:{path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise AddressError(f"cannot bind unix:{path}: another process is listening on it")


def _adopt(address: FDAddress) -> socket.socket:
    try:
        sock = socket.socket(fileno=address.fd)
    except OSError as error:
        raise AddressError(f"cannot use {address}: {_describe(error)}") from None
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise AddressError(f"cannot use {address}: not a listening socket")
    return sock


def _describe(error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return "address already in use"
    if error.errno == errno.EACCES:
        return "permission denied"
    return error.strerror or str(error)


def describe_listener(sock: socket.socket) -> str:
    """The address a listening socket is bound to, as a user would write it."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def close_unix_listener(sock: socket.socket) -> None:
    """Close a listener and remove its socket file if it is ours."""
    path = sock.getsockname() if sock.family == socket.AF_UNIX else None
    sock.close()
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


# struct tcp_info (linux/tcp.h): eight u8 fields, then u32 rto, ato, snd_mss, rcv_mss,
# unacked, sacked. For a socket in LISTEN state the kernel reports the accept queue's
# current length in tcpi_unacked and its limit in tcpi_sacked (tcp_get_info).
_TCP_INFO_UNACKED = 24
_TCP_INFO_LENGTH = 32


def listen_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(connections waiting to be accepted, the queue's limit) of a TCP listener on
    Linux; None where the platform does not tell (unix sockets, other systems)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LENGTH)
    except OSError:
        return None
    if len(info) < _TCP_INFO_LENGTH:
        return None
    waiting = int.from_bytes(info[_TCP_INFO_UNACKED:_TCP_INFO_UNACKED + 4], "little")
    limit = int.from_bytes(info[_TCP_INFO_UNACKED + 4:_TCP_INFO_LENGTH], "little")
    return waiting, limit
