"""The master's listening sockets, by address, across reloads that change --bind.

A generation keeps the sockets it was started with. A reload whose configuration adds a
bind opens it before the new generation boots (an address in use refuses the reload and
changes nothing); a bind that was removed stays open until the last worker of a
generation that used it has exited, so its queued connections are still served. Sockets
from socket activation belong to systemd: they are never changed by a reload.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import socket
from collections.abc import Iterable

from unbroken.master.systemd import activated_sockets
from unbroken.sockets import bind, close_unix_listener, describe_listener, parse_address

log = logging.getLogger("unbroken.master")


class ListenerSet:
    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self.by_address: dict[str, socket.socket] = {}
        self.current: tuple[socket.socket, ...] = ()
        self.activated = False

    def open(self, binds: Iterable[str]) -> None:
        activated = activated_sockets()
        if activated:
            self.activated = True
            log.info("using %d socket(s) from socket activation instead of --bind",
                     len(activated))
            self.by_address = {describe_listener(s): s for s in activated}
            self.current = tuple(activated)
        else:
            self.current = self.prepare(binds)

    def prepare(self, binds: Iterable[str]) -> tuple[socket.socket, ...]:
        """The sockets for `binds`, opening the new ones; AddressError leaves all as it was."""
        if self.activated:
            return self.current
        opened: dict[str, socket.socket] = {}
        try:
            for text in binds:
                if text not in self.by_address and text not in opened:
                    opened[text] = bind(parse_address(text), self.backlog)
        except BaseException:
            for sock in opened.values():
                close_unix_listener(sock)
            raise
        for sock in opened.values():
            log.info("listening on %s as well", describe_listener(sock))
        self.by_address.update(opened)
        return tuple(self.by_address[text] for text in dict.fromkeys(binds))

    def give_to(self, user: str | None, group: str | None) -> None:
        """Hand unix socket files to --user/--group: they are 0660 (sockets.py), so that
        group (say, the proxy's user is in it) can connect and nobody else can."""
        if user is None and group is None:
            return
        uid = pwd.getpwnam(user).pw_uid if user is not None else -1
        gid = grp.getgrnam(group).gr_gid if group is not None else (
            pwd.getpwnam(user).pw_gid if user is not None else -1)
        for sock in self.current:
            if sock.family == socket.AF_UNIX and not self.activated:
                os.chown(sock.getsockname(), uid, gid)

    def release_unused(self, in_use: Iterable[socket.socket]) -> None:
        """Close the sockets no generation with live workers (nor the current one) uses."""
        keep = {id(sock) for sock in (*self.current, *in_use)}
        for text, sock in list(self.by_address.items()):
            if id(sock) not in keep:
                log.info("no longer listening on %s", describe_listener(sock))
                del self.by_address[text]
                close_unix_listener(sock)

    def close(self) -> None:
        for sock in self.by_address.values():
            close_unix_listener(sock)
        self.by_address.clear()
