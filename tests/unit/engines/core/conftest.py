"""Make `fakes` importable from the core's tests (no packages under tests/)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
