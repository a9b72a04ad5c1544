"""Where a service's control socket lives when --control is not given.

The master and every client must agree on it without sharing an environment: the deploy
line `sudo -u myapp unbroken reload --name myapp` runs with none of the service's
variables (sudo resets them), so the place depends only on the name, the uid and what is
on disk, never on `$XDG_RUNTIME_DIR`. The master takes the first of:

1. `/run/unbroken/<name>/control.sock` when that directory is the master's own (systemd
   makes it for `RuntimeDirectory=unbroken/<name>`, root makes it once for a service user)
   or the master may create it (root): the place of a system service.
2. `/run/user/<uid>/unbroken/<name>/control.sock` when logind's runtime directory for the
   uid exists (what `$XDG_RUNTIME_DIR` is in a login session; a user unit's
   `RuntimeDirectory=unbroken/<name>` makes the same directory).
3. `/tmp/unbroken-<uid>/<name>.sock` otherwise.

A client looks in all of them, and in `$XDG_RUNTIME_DIR/unbroken/<name>.sock` (where
masters of unbroken 0.x before this rule listen), and takes the first that holds a
socket; with none, it names the master's choice. Each directory is created 0700 and
checked by control.trust.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
from collections.abc import Mapping


def default_control_path(name: str) -> str:
    """The master's control socket for `name` (see the module's docstring)."""
    return choose_control_path(name, os.geteuid())


def find_control_path(name: str) -> str:
    """The control socket a client should try for `name`: the first candidate holding a
    socket, else the master's choice."""
    uid = os.geteuid()
    for path in control_path_candidates(name, uid, os.environ):
        if _is_socket(path):
            return path
    return choose_control_path(name, uid)


def choose_control_path(name: str, uid: int, run: str = "/run", tmp: str = "/tmp") -> str:
    system = os.path.join(run, "unbroken", name)
    if _owned_by(system, uid) or (not os.path.lexists(system) and _may_create(system, uid)):
        return os.path.join(system, "control.sock")
    user = os.path.join(run, "user", str(uid))
    if _owned_by(user, uid):
        return os.path.join(user, "unbroken", name, "control.sock")
    return os.path.join(tmp, f"unbroken-{uid}", f"{name}.sock")


def control_path_candidates(name: str, uid: int, environ: Mapping[str, str],
                            run: str = "/run", tmp: str = "/tmp") -> list[str]:
    """Every place a master of `uid` may have put the socket of `name`, in the order
    the master prefers them."""
    return list(dict.fromkeys(
        os.path.join(directory, name, "control.sock") if per_name
        else os.path.join(directory, f"{name}.sock")
        for directory, per_name in _places(uid, environ, run, tmp)))


def _places(uid: int, environ: Mapping[str, str], run: str,
            tmp: str) -> list[tuple[str, bool]]:
    """The directories control sockets live in, in the master's order, and whether each
    holds a directory per name (`NAME/control.sock`) or `NAME.sock` files."""
    places = [(os.path.join(run, "unbroken"), True),
              (os.path.join(run, "user", str(uid), "unbroken"), True)]
    legacy = environ.get("XDG_RUNTIME_DIR")
    if legacy:
        places.append((os.path.join(legacy, "unbroken"), False))
    places.append((os.path.join(tmp, f"unbroken-{uid}"), False))
    return places


def _owned_by(directory: str, uid: int) -> bool:
    try:
        info = os.lstat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid


def _may_create(directory: str, uid: int) -> bool:
    """Root only: anyone else would make a directory others could not find as theirs."""
    if uid != 0:
        return False
    parent = os.path.dirname(directory)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    return os.path.isdir(parent) and os.access(parent, os.W_OK)


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


# -- a path that cannot work, and the services a wrong --name could have meant ---------

# sun_path is 108 bytes on Linux (104 on macOS and the BSDs), one of them the final NUL.
UNIX_PATH_LIMIT = 103 if sys.platform == "darwin" or "bsd" in sys.platform else 107


def control_path_problem(path: str, named: bool = True) -> str | None:
    """Why `path` cannot be a unix socket (too long for sun_path), or None. `named`: the
    path comes from --name (else from --control)."""
    size = len(os.fsencode(path))
    if size <= UNIX_PATH_LIMIT:
        return None
    fix = "give a shorter --name, or --control PATH" if named else "give a shorter --control"
    return (f"control socket path {path} is {size} bytes, over the {UNIX_PATH_LIMIT}-byte "
            f"limit of a unix socket path: {fix}")


def control_directories(uid: int, environ: Mapping[str, str], run: str = "/run",
                        tmp: str = "/tmp") -> list[str]:
    """The directories the candidates of every name live in (see the module docstring)."""
    return list(dict.fromkeys(directory for directory, _ in _places(uid, environ, run, tmp)))


def services_in(directory: str) -> list[str]:
    """Names of the services answering in `directory`, as `NAME/control.sock` or
    `NAME.sock` (a leftover socket is skipped)."""
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return []
    names = []
    for entry in entries:
        nested = os.path.join(directory, entry, "control.sock")
        if _answers(nested):
            names.append(entry)
        elif entry.endswith(".sock") and _answers(os.path.join(directory, entry)):
            names.append(entry.removesuffix(".sock"))
    return names


def _answers(path: str) -> bool:
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            probe.connect(path)
        return True
    except OSError:
        return False


def no_service(tried: str) -> str:
    """One line for `--name` naming no service: what is running, and where we looked."""
    base = os.path.dirname(os.path.abspath(tried))
    if os.path.basename(tried) == "control.sock":
        base = os.path.dirname(base)  # <dir>/<name>/control.sock: the names are in <dir>
    directories = list(dict.fromkeys([base, *control_directories(os.geteuid(), os.environ)]))
    running = list(dict.fromkeys(f"--name {name}" for directory in directories
                                 for name in services_in(directory)))
    looked = " and ".join(directories)
    if not running:
        return f"no unbroken service at {tried}; none is running (looked in {looked})"
    return (f"no unbroken service at {tried}; running: {', '.join(running)} "
            f"(looked in {looked})")
