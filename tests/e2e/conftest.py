"""Browser tests reuse the service tests' synthetic reference (tests/integration/service_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# service_support lives next to the integration tests; one synthetic world for every service test.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
