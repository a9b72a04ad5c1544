"""The PID file: written atomically, removed on exit only if it is still ours."""

from __future__ import annotations

import os
import tempfile

from unbroken.errors import ResourceError


def write_pidfile(path: str, pid: int) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=".unbroken-pid-", dir=directory)
    except OSError as error:
        raise ResourceError(f"cannot write --pid {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{pid}\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as error:
        os.unlink(temporary)
        raise ResourceError(f"cannot write --pid {path}: {error.strerror or error}") from None
    except BaseException:
        os.unlink(temporary)
        raise


def remove_pidfile(path: str, pid: int) -> None:
    try:
        with open(path) as handle:
            if handle.read().strip() != str(pid):
                return
        os.unlink(path)
    except OSError:
        pass
