"""Releases of the bundled example app, laid out the way rsync or git-pull deploys are.

`root/releases/<name>/app.py` and a `root/current` symlink switched atomically
(a new link renamed over the old one), so a reload never sees a half-written tree.
"""

from __future__ import annotations

import os
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "example" / "app.py"


def write_release(root: Path, release: str, boot: float = 0.0, broken: bool = False) -> None:
    """Write release `release` of the example app and point `root/current` at it."""
    directory = root / "releases" / release
    directory.mkdir(parents=True, exist_ok=True)
    text = SOURCE.read_text()
    text = text.replace('RELEASE = "v1"', f"RELEASE = {release!r}")
    text = text.replace("BOOT_SECONDS = 0.0", f"BOOT_SECONDS = {boot!r}")
    text = text.replace("BROKEN = False", f"BROKEN = {broken!r}")
    (directory / "app.py").write_text(text)
    link = root / ".current.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(Path("releases") / release)
    os.replace(link, root / "current")
