"""Where a service's control socket lives when --control is not given.

`$XDG_RUNTIME_DIR/unbroken/<name>.sock` (a per-user 0700 tmpfs under systemd),
else `/tmp/unbroken-<uid>/<name>.sock`; the directory is created 0700.
"""

from __future__ import annotations

import os


def default_control_path(name: str) -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    directory = os.path.join(runtime, "unbroken") if runtime else f"/tmp/unbroken-{os.getuid()}"
    return os.path.join(directory, f"{name}.sock")
