"""Where a service's control socket lives when --control is not given.

`$XDG_RUNTIME_DIR/unbroken/<name>.sock` (a per-user 0700 tmpfs under systemd),
else `/tmp/unbroken-<uid>/<name>.sock`; the directory is created 0700.
"""

from __future__ import annotations

import os
import socket
import stat
import sys


def default_control_path(name: str) -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    directory = os.path.join(runtime, "unbroken") if runtime else f"/tmp/unbroken-{os.getuid()}"
    return os.path.join(directory, f"{name}.sock")


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


def control_directories(tried: str) -> list[str]:
    """Where services' control sockets may be: the directory of `tried` first, then every
    default directory (the runtime directory's and /tmp's), each once."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    candidates = [os.path.dirname(os.path.abspath(tried)),
                  os.path.join(runtime, "unbroken") if runtime else None,
                  f"/tmp/unbroken-{os.getuid()}"]
    return list(dict.fromkeys(c for c in candidates if c))


def services_in(directory: str) -> list[str]:
    """Names of the services answering in `directory` (a leftover socket is skipped)."""
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return []
    names = []
    for entry in entries:
        path = os.path.join(directory, entry)
        if not entry.endswith(".sock") or not _answers(path):
            continue
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
    directories = control_directories(tried)
    here = os.path.dirname(os.path.abspath(tried))
    running = [f"--name {name}" if directory == here
               else f"--control {os.path.join(directory, name)}.sock"
               for directory in directories for name in services_in(directory)]
    looked = " and ".join(directories)
    if not running:
        return f"no unbroken service at {tried}; none is running (looked in {looked})"
    return (f"no unbroken service at {tried}; running: {', '.join(running)} "
            f"(looked in {looked})")
