"""`grainproof bench provenance` gives, on the protocol's own seed, exactly the rows the shared protocol prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grainproof.services.provenance_bench import read_table, run_provenance_bench

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PROTOCOL = SHARED / "tools" / "provenance_protocol.py"
POTTERY = SHARED / "data" / "provenance" / "pottery.csv"
FEATURES = "Al,Fe,Mg,Ca,Na,K,Ti,Mn,Ba"


@pytest.mark.skipif(not (PROTOCOL.is_file() and POTTERY.is_file()), reason="../shared protocol or data absent")
def test_seed_7_reproduces_the_protocols_rows_for_grainproof_and_every_peer() -> None:
    exe = Path(sys.executable).with_name("grainproof")
    printed = subprocess.run(
        [sys.executable, str(PROTOCOL), str(exe), str(POTTERY), "Site", FEATURES, "closed"],
        capture_output=True,
        text=True,
        check=False,  # it stops with a traceback at the kNN-distance peer, which cannot fit pottery's two-row site
        timeout=600,
    ).stdout
    protocol_rows = {row["method"]: row for row in map(json.loads, printed.splitlines())}
    assert "grainproof" in protocol_rows
    x, y = read_table(POTTERY, "Site", FEATURES)
    result = run_provenance_bench(x, y, mode="closed", seeds=[7], protocol=PROTOCOL)
    ours = {row.method: row for row in result.rows}
    assert set(ours) == set(protocol_rows)  # the peer the protocol prints no row for fails here too
    assert {method for method, _ in result.failed_peers} == {"knn5_distance"}
    for method, row in protocol_rows.items():
        mine = ours[method]
        assert (mine.n_genuine, mine.n_false) == (row["n_genuine"], row["n_false"])
        for name in ("false_alarm", "detection", "auroc"):
            assert round(getattr(mine, name), 4) == row[name], (method, name)
