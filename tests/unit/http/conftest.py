"""The parser tests share one harness (parser_harness.py); put it on the import path."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
