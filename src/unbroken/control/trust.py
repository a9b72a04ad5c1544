"""Who may stand behind a control socket: the checks ssh-agent and tmux make.

A control socket is only as private as its directory: whoever can write there can
rename the socket away and put an impostor in its place, and the default directory
(`/tmp/unbroken-<uid>/`, the last resort of control.paths) can be created first by anyone.
So the server refuses a directory that is not its own or that others can write, and
the client refuses a reply from a socket that is not served by its own uid (or root)
from such a directory. Each check returns the problem as one line, or None.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import struct

WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def _who(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def directory_problem(directory: str, uid: int) -> str | None:
    """Why `directory` cannot hold a control socket of `uid`, or None."""
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return f"control directory {directory} does not exist"
    if stat.S_ISLNK(info.st_mode):
        return f"control directory {directory} is a symbolic link: use a real directory"
    if not stat.S_ISDIR(info.st_mode):
        return f"control directory {directory} is not a directory"
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != uid or mode & WRITABLE_BY_OTHERS:
        return (f"control directory {directory} belongs to {_who(info.st_uid)} with mode "
                f"{mode:04o}; it must be {_who(uid)}'s and not writable by others: remove it "
                "(or chmod go-w it if it is yours), or pass --control in a directory of yours")
    return None


def path_problem(path: str) -> str | None:
    """A regular file or a symlink where the socket goes is never ours to replace."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return f"control socket {path} is a symbolic link, not a socket: remove it"
    if not stat.S_ISSOCK(info.st_mode):
        return f"control socket {path} is a regular file, not a socket: remove it"
    return None


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return int(pid), int(uid)


def server_problem(path: str, uid: int, our_uid: int) -> str | None:
    """Why a client of `our_uid` must not trust the server (of `uid`) at `path`."""
    if uid not in (our_uid, 0):
        return (f"refusing {path}: it is served by {_who(uid)}, not by you or root; run the "
                "command as that user (sudo -u USER unbroken ...)")
    problem = directory_problem(os.path.dirname(os.path.abspath(path)), uid)
    if problem is not None:
        return f"refusing {path}: {problem}"
    try:
        owner = os.lstat(path).st_uid
    except OSError:
        owner = -1
    if owner != uid:
        return f"refusing {path}: the socket file belongs to {_who(owner)}, its server is " \
            f"{_who(uid)}"
    return None
