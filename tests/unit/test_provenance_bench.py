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
from grainproof.scoring.conformal import conformal_p_values
from grainproof.services.provenance_bench import (
    OURS,
    P_VALUE_SUFFIX,
    protocol_splits,
    read_table,
    run_provenance_bench,
)

#: A protocol file of the shared protocol's shape with one peer: the claimed label's centroid, nearer = more
#: plausible; its flag threshold the alpha-quantile of out-of-fold scores of the reference's own rows.
PROTOCOL = """
import numpy as np
from sklearn.model_selection import StratifiedKFold

def centroid(Xr, yr, Xc, claims):
    return np.array([-np.linalg.norm(Xc[i] - Xr[yr == c].mean(0)) for i, c in enumerate(claims)])

PEERS = {"centroid": centroid}

def peer_scores(f, X, y, ref, claim_idx, claimed, alpha, seed=0):
    s = f(X[ref], y[ref], X[claim_idx], list(claimed))
    oof = []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(X[ref], y[ref]):
        r, t = ref[tr], ref[te]
        oof += list(f(X[r], y[r], X[t], list(y[t])))
    return s, np.quantile(oof, alpha)
"""


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
        (["--peer-rule", "rank"], "--peer-rule"),
    ):
        bad = runner.invoke(app, ["bench", "provenance", str(path), "site", "f_*", *args])
        # `grainproof.cli.main` turns these into one line and exit status 2 (tests/unit/test_cli_basics.py).
        assert isinstance(bad.exception, GrainproofError) and message in str(bad.exception)
    missing = runner.invoke(app, ["bench", "provenance", str(path), "region", "f_*"])
    assert isinstance(missing.exception, GrainproofError) and "region" in str(missing.exception)


def _centroid_scores(
    x: np.ndarray, y: np.ndarray, rows: np.ndarray, labels: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    return np.array(
        [-np.linalg.norm(x[r] - x[reference][y[reference] == c].mean(0)) for r, c in zip(rows, labels, strict=True)]
    )


def test_the_p_value_rule_flags_a_peers_claim_as_grainproof_would_from_the_protocols_own_scores(
    tmp_path: Path,
) -> None:
    """Under --peer-rule p-value a peer flags exactly the claims whose conformal p-value among its out-of-fold
    scores is at most alpha; the quantile rule stays the protocol's. On a reference of 19 rows a p-value at 0.1 must
    lie below all but one out-of-fold score, where the quantile (index 1.8) flags below about the third smallest."""
    from sklearn.model_selection import StratifiedKFold

    protocol = tmp_path / "protocol.py"
    protocol.write_text(PROTOCOL)
    x, y = _table(seed=5, per_label=8, shift=1.0)
    alpha = 0.1
    result = run_provenance_bench(
        x, y, mode="closed", seeds=[0], alpha=alpha, protocol=protocol, peer_rules=("quantile", "p-value")
    )
    expected: dict[str, list[np.ndarray]] = {"quantile": [], "p-value": []}
    genuine = []
    for split in protocol_splits(x, y, "closed", seed=0):
        ref = split.reference
        score = _centroid_scores(x, y, split.claimed_rows, split.claimed_labels, ref)
        oof = np.concatenate(
            [
                _centroid_scores(x, y, ref[te], y[ref[te]], ref[tr])
                for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(x[ref], y[ref])
            ]
        )
        expected["quantile"].append(score <= np.quantile(oof, alpha))
        expected["p-value"].append(conformal_p_values([np.sort(-oof)], -score) <= alpha)
        genuine.append(split.genuine)
    g = np.concatenate(genuine)
    means = result.means()
    for name, rule in (("centroid", "quantile"), ("centroid" + P_VALUE_SUFFIX, "p-value")):
        flags = np.concatenate(expected[rule])
        assert means[name][0] == pytest.approx(flags[g].mean())
        assert means[name][1] == pytest.approx(flags[~g].mean())
    # The rules part here: the p-value flags fewer claims, and only the quantile's best peer is the plain name.
    assert means["centroid" + P_VALUE_SUFFIX][1] < means["centroid"][1]
    assert means["centroid" + P_VALUE_SUFFIX][2] == means["centroid"][2]  # one score, one AUROC
    assert result.best_peer(1.0, "quantile") == ("centroid", means["centroid"][1])
    assert result.best_peer(1.0, "p-value") == ("centroid" + P_VALUE_SUFFIX, means["centroid" + P_VALUE_SUFFIX][1])


def test_the_p_value_rule_refuses_a_protocol_whose_scores_it_cannot_read(tmp_path: Path) -> None:
    """A peer_scores that scores the folds before the claims would hand the p-value rule the wrong scores."""
    protocol = tmp_path / "protocol.py"
    protocol.write_text(
        PROTOCOL.replace("return s, np.quantile(oof, alpha)", "return s, np.quantile(oof, alpha) + 1.0")
    )
    x, y = _table(per_label=10)
    with pytest.raises(ClaimError, match="out-of-fold"):
        run_provenance_bench(x, y, mode="closed", seeds=[0], protocol=protocol, peer_rules=("p-value",))
    with pytest.raises(ClaimError, match="Peer rule"):
        run_provenance_bench(x, y, mode="closed", seeds=[0], protocol=protocol, peer_rules=("rank",))
