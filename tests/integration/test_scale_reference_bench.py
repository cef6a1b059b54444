"""`bench reference` end to end on tiny sizes: every figure is there and the day's update beats a rebuild."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grainproof.scale.reference_bench import run_reference_bench, write_synthetic_reference


def test_synthetic_reference_is_the_same_for_the_same_seed(tmp_path: Path) -> None:
    first = write_synthetic_reference(tmp_path / "a", lots=200, dim=6, seed=3)
    second = write_synthetic_reference(tmp_path / "b", lots=200, dim=6, seed=3)
    assert first.vectors.read_bytes() == second.vectors.read_bytes()
    with np.load(first.table) as a, np.load(second.table) as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_reference_bench_reports_builds_memory_and_update_against_rebuild(tmp_path: Path) -> None:
    bench = run_reference_bench(
        sizes=[400, 800], dim=8, update_lots=100, seed=0, threads=1, baseline_max_lots=400, work_dir=tmp_path
    )
    assert [row["lots"] for row in bench.builds] == [400, 800]
    assert "in_memory" in bench.builds[0] and "in_memory" not in bench.builds[1]
    for row in bench.builds:
        assert row["streaming"]["lots"] == row["lots"]
        assert row["streaming"]["build_s"] > 0 and row["streaming"]["peak_rss_mib"] > 0
    assert bench.update["base_lots"] == 800 and bench.update["new_lots"] == 100
    assert bench.update["update_s"] > 0 and bench.update["rebuild_s"] > 0
    assert list(tmp_path.iterdir()) == []  # scratch archives are removed
