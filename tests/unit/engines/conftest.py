"""Make `wsgi_harness` importable from the engine tests (no packages under tests/), and
tests/support's `waiting` (the tests' one bounded wait) as in the integration tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))
