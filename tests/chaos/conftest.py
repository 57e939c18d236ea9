"""tests/chaos: the kill-anywhere drill (harness.py is shared with bench/chaos.py and imported by name)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
