"""The embed package stays light to import: torch loads only when an embedder is built."""

from __future__ import annotations

import subprocess
import sys


def test_importing_embed_and_invariance_does_not_import_torch() -> None:
    script = (
        "import sys, grainproof.embed, grainproof.embed.invariance, grainproof.embed.photos;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
