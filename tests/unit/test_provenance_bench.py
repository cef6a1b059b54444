"""`grainproof bench provenance`: the protocol's splits, grainproof's figures per seed, bad tables refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grainproof.cli import app
from grainproof.errors import ClaimError, GrainproofError
from grainproof.services.provenance_bench import OURS, protocol_splits, read_table, run_provenance_bench


def _table(seed: int = 0, per_label: int = 30, shift: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Three labels of Gaussian rows in 4 features, the means `shift` standard deviations apart."""
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(loc=shift * k, size=(per_label, 4)) for k in range(3)])
    y = np.repeat(np.array(["a", "b", "c"]), per_label)
    return x, y


def test_closed_splits_claim_every_held_out_row_as_every_label_and_keep_it_out_of_its_reference() -> None:
    x, y = _table()
    splits = protocol_splits(x, y, "closed", seed=7)
    assert len(splits) == 5
    held = np.concatenate([np.unique(s.claimed_rows) for s in splits])
    assert sorted(held.tolist()) == list(range(len(y)))  # each row is held out once
    for split in splits:
        assert not set(split.claimed_rows.tolist()) & set(split.reference.tolist())
        assert len(split.claimed_rows) == 3 * len(np.unique(split.claimed_rows))
        assert np.array_equal(split.genuine, split.claimed_labels == y[split.claimed_rows])


def test_open_set_splits_leave_one_label_out_and_claim_its_rows_as_another() -> None:
    x, y = _table()
    splits = protocol_splits(x, y, "openset", seed=7)
    assert len(splits) == 3
    for held_label, split in zip(["a", "b", "c"], splits, strict=True):
        assert held_label not in set(y[split.reference].tolist())
        false_rows = split.claimed_rows[~split.genuine]
        assert set(y[false_rows].tolist()) == {held_label}
        assert held_label not in set(split.claimed_labels.tolist())
        assert np.all(y[split.claimed_rows[split.genuine]] == split.claimed_labels[split.genuine])


def test_the_bench_reports_each_seed_and_their_mean_the_same_on_every_run() -> None:
    x, y = _table()
    first = run_provenance_bench(x, y, mode="closed", seeds=[0, 1], alpha=0.1)
    again = run_provenance_bench(x, y, mode="closed", seeds=[0, 1], alpha=0.1)
    assert first == again  # seeded splits, deterministic scoring
    rows = [row for row in first.rows if row.method == OURS]
    assert [row.seed for row in rows] == [0, 1]
    for row in rows:
        assert row.n_genuine == len(y) and row.n_false == 2 * len(y)
        assert row.detection > 0.95  # labels four standard deviations apart
    false_alarm, detection, auroc = first.means()[OURS]
    assert false_alarm == pytest.approx(np.mean([r.false_alarm for r in rows]))
    assert detection == pytest.approx(np.mean([r.detection for r in rows]))
    assert auroc == pytest.approx(np.mean([r.auroc for r in rows]))
    assert first.best_peer(0.06) is None  # no protocol file: no peers


def test_false_alarm_holds_when_the_labels_are_alike() -> None:
    """Three labels drawn from one law: every claim is as plausible as a genuine one, so flags stay near alpha."""
    x, y = _table(seed=3, per_label=40, shift=0.0)
    result = run_provenance_bench(x, y, mode="closed", seeds=[0, 1, 2], alpha=0.1)
    false_alarm, detection, _ = result.means()[OURS]
    assert false_alarm <= 0.16
    assert detection <= 0.2


def test_tables_the_bench_cannot_read_are_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"label": ["a", "b"] * 5, "f_0": np.arange(10.0), "f_1": ["x"] * 10}).to_csv(path, index=False)
    with pytest.raises(ClaimError, match="no column"):
        read_table(path, "site", "f_*")
    with pytest.raises(ClaimError, match="numbers"):
        read_table(path, "label", "f_0,f_1")
    pd.DataFrame({"label": ["a"] * 10, "f_0": np.arange(10.0)}).to_csv(path, index=False)
    with pytest.raises(ClaimError, match="two values"):
        read_table(path, "label", "f_*")
    with pytest.raises(ClaimError, match="Mode"):
        protocol_splits(np.zeros((4, 1)), np.array(["a", "b"] * 2), "open", seed=0)


def test_the_command_prints_json_and_refuses_bad_options(tmp_path: Path) -> None:
    x, y = _table(per_label=20)
    path = tmp_path / "table.csv"
    pd.DataFrame(x, columns=[f"f_{j}" for j in range(4)]).assign(site=y).to_csv(path, index=False)
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "provenance", str(path), "site", "f_*", "--seeds", "0", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    means = document["results"][0]["means"][OURS]
    assert set(means) == {"false_alarm", "detection", "auroc"}
    assert document["results"][0]["mode"] == "closed"
    for args, message in (
        (["--mode", "open"], "--mode"),
        (["--seeds", "a,b"], "--seeds"),
        (["--alpha", "1.5"], "--alpha"),
    ):
        bad = runner.invoke(app, ["bench", "provenance", str(path), "site", "f_*", *args])
        # `grainproof.cli.main` turns these into one line and exit status 2 (tests/unit/test_cli_basics.py).
        assert isinstance(bad.exception, GrainproofError) and message in str(bad.exception)
    missing = runner.invoke(app, ["bench", "provenance", str(path), "region", "f_*"])
    assert isinstance(missing.exception, GrainproofError) and "region" in str(missing.exception)
