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
import stat
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
    candidates = [os.path.join(run, "unbroken", name, "control.sock"),
                  os.path.join(run, "user", str(uid), "unbroken", name, "control.sock")]
    legacy = environ.get("XDG_RUNTIME_DIR")
    if legacy:
        candidates.append(os.path.join(legacy, "unbroken", f"{name}.sock"))
    candidates.append(os.path.join(tmp, f"unbroken-{uid}", f"{name}.sock"))
    return list(dict.fromkeys(candidates))


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
