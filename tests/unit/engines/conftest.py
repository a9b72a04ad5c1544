"""Make `wsgi_harness` importable from the engine tests (no packages under tests/)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
