"""--reload-on-touch: a file whose modification time, when it changes, asks for a reload.

Polled once per loop pass (a stat is cheaper than an inotify watch to keep right
across editors that replace the file); a file that does not exist yet is not a
change, and one that appears later is.
"""

from __future__ import annotations

import os


class TouchFile:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.mtime = self._mtime()

    def _mtime(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime if self.path else None
        except OSError:
            return None

    def touched(self) -> bool:
        if not self.path:
            return False
        mtime = self._mtime()
        if mtime is None or mtime == self.mtime:
            return False
        self.mtime = mtime
        return True

    def renamed(self, path: str | None) -> TouchFile:
        """A reload's configuration may name another file (or the same one)."""
        return self if path == self.path else TouchFile(path)
