"""The examples of `examples/` are imported by their module names, as uvicorn and flask
import them when run from that directory."""

from __future__ import annotations

import sys

from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))
