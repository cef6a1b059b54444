"""`grainproof bench provenance`: the shared provenance protocol's splits over several split seeds, in process.

`../shared/tools/provenance_protocol.py` compares grainproof with five textbook peers on a labelled table (closed
set: each held-out row claimed as every label; open set: a label missing from the reference, its rows claimed as
the label a shrinkage LDA fitted on the reference finds most similar). It draws one split (`StratifiedKFold` seed
7). On tables of 50 to 300 rows a false alarm moves by 0.02 to 0.04 from one split to the next, and which peer
counts as best turns on that draw (docs/scoring.md, "Over six split seeds"). This bench runs the same splits for
several seeds and reports each method's mean: grainproof through the model `grainproof reference build` fits and
the verdicts `grainproof verify` gives (in memory: no files, no subprocess), and, given the protocol's file, its
peers through its own functions (`PEERS`, `peer_scores`) on the very same claims.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grainproof.domain import Claim, LotRecord, Origin
from grainproof.errors import ClaimError
from grainproof.progress import ProgressCallback

OURS = "grainproof"
MODES = ("closed", "openset")
#: How a peer's flags are set from its out-of-fold scores on genuine claims inside the reference: "quantile", the
#: protocol's own rule (below their plain alpha-quantile); "p-value", grainproof's (a conformal p-value ranked
#: among them, `conformal_p_values`, at most alpha), which keeps the finite-sample step p >= 1 / (n + 1).
PEER_RULES = ("quantile", "p-value")
#: Suffix of a peer's row under the p-value rule.
P_VALUE_SUFFIX = " (p-value)"
#: The protocol's folds: five, stratified by label.
PROTOCOL_FOLDS = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolSplit:
    """One reference and the claims scored against it, as the protocol draws them."""

    reference: np.ndarray  # rows of the table in the reference
    claimed_rows: np.ndarray  # rows claimed (a row may be claimed several times, as several labels)
    claimed_labels: np.ndarray  # the label each claim declares
    genuine: np.ndarray  # whether the declared label is the row's own


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvenanceRow:
    """One method on one split seed: realised false alarm on genuine claims, detection of false ones, AUROC."""

    method: str
    seed: int
    false_alarm: float
    detection: float
    auroc: float
    n_genuine: int
    n_false: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvenanceBenchResult:
    """Every method's row per split seed in one mode, and the peers that could not score the table."""

    mode: str
    alpha: float
    seeds: tuple[int, ...]
    rows: tuple[ProvenanceRow, ...]
    #: The rules the peers' flags were set by (PEER_RULES); rows under "p-value" carry P_VALUE_SUFFIX.
    peer_rules: tuple[str, ...] = ("quantile",)
    #: Peers that could not score this table, with why (the protocol prints no row for them either).
    failed_peers: tuple[tuple[str, str], ...] = ()

    def means(self) -> dict[str, tuple[float, float, float]]:
        """Per method, its (false alarm, detection, AUROC) averaged over the seeds, grainproof first."""
        out: dict[str, tuple[float, float, float]] = {}
        for method in dict.fromkeys(row.method for row in self.rows):
            mine = [row for row in self.rows if row.method == method]
            out[method] = (
                float(np.mean([r.false_alarm for r in mine])),
                float(np.mean([r.detection for r in mine])),
                float(np.mean([r.auroc for r in mine])),
            )
        return out

    def best_peer(self, max_false_alarm: float, rule: str = "quantile") -> tuple[str, float] | None:
        """The peer with the highest mean detection under `rule` among those whose mean false alarm is at most
        `max_false_alarm` (the issue's rule: a peer that flags genuine lots more often does not count)."""
        peers = [
            (m, v)
            for m, v in self.means().items()
            if m != OURS and m.endswith(P_VALUE_SUFFIX) == (rule == "p-value") and v[0] <= max_false_alarm
        ]
        if not peers:
            return None
        method, values = max(peers, key=lambda item: item[1][1])
        return method, values[1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "alpha": self.alpha,
            "seeds": list(self.seeds),
            "peer_rules": list(self.peer_rules),
            "means": {m: {"false_alarm": v[0], "detection": v[1], "auroc": v[2]} for m, v in self.means().items()},
            "rows": [asdict(row) for row in self.rows],
            "failed_peers": {method: why for method, why in self.failed_peers},
        }


def read_table(path: Path, label: str, features: str) -> tuple[np.ndarray, np.ndarray]:
    """The feature matrix and labels of a CSV, as the protocol reads it: FEATURES comma-separated or 'f_*' (every
    column starting with f_); rows missing a feature or the label are dropped."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ClaimError(f"Cannot read the table {path}: {exc}") from exc
    columns = [c for c in frame.columns if str(c).startswith("f_")] if features == "f_*" else features.split(",")
    missing = [c for c in [label, *columns] if c not in frame.columns]
    if missing or not columns:
        raise ClaimError(f"{path} has no column(s) {', '.join(missing) or 'f_*'}.")
    frame = frame.dropna(subset=[*columns, label]).reset_index(drop=True)
    try:
        values = frame[columns].to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise ClaimError(f"{path}: the feature columns must hold numbers ({exc}).") from exc
    labels = frame[label].astype(str).to_numpy()
    if len(np.unique(labels)) < 2:
        raise ClaimError(f"{path}: the label {label} needs at least two values.")
    return values, labels


def protocol_splits(x: np.ndarray, y: np.ndarray, mode: str, seed: int) -> list[ProtocolSplit]:
    """The protocol's references and claims for one split seed (its own rule; it uses seed 7)."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    if mode not in MODES:
        raise ClaimError(f"Mode {mode!r} is not one of {', '.join(MODES)}.")
    folds = StratifiedKFold(PROTOCOL_FOLDS, shuffle=True, random_state=seed)
    splits: list[ProtocolSplit] = []
    if mode == "closed":
        for train, test in folds.split(x, y):
            labels = np.unique(y[train])
            rows, claimed = np.repeat(test, len(labels)), np.tile(labels, len(test))
            splits.append(
                ProtocolSplit(reference=train, claimed_rows=rows, claimed_labels=claimed, genuine=claimed == y[rows])
            )
        return splits
    for held_label in np.unique(y):
        other, held = np.flatnonzero(y != held_label), np.flatnonzero(y == held_label)
        train, test = next(folds.split(x[other], y[other]))
        reference = other[train]
        scaler = StandardScaler().fit(x[reference])
        lie = _shrinkage_lda().fit(scaler.transform(x[reference]), y[reference]).predict(scaler.transform(x[held]))
        splits.append(
            ProtocolSplit(
                reference=reference,
                claimed_rows=np.r_[other[test], held],
                claimed_labels=np.r_[y[other[test]], lie],
                genuine=np.r_[np.ones(len(test), dtype=bool), np.zeros(len(held), dtype=bool)],
            )
        )
    return splits


def _shrinkage_lda() -> Any:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")


def _lots(x: np.ndarray, labels: Sequence[str], rows: np.ndarray, prefix: str) -> list[LotRecord]:
    """Rows as the protocol's manifests hold them: species 'sample', variety 'all', region = the label."""
    return [
        LotRecord(
            claim=Claim(lot_id=f"{prefix}{k}", species="sample", variety="all", origin=Origin(region=str(label))),
            features=tuple(float(v) for v in x[row]),
        )
        for k, (row, label) in enumerate(zip(rows.tolist(), labels, strict=True))
    ]


def grainproof_claims(
    x: np.ndarray, y: np.ndarray, split: ProtocolSplit, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each claim's origin plausibility and flag, from the model `grainproof reference build` fits on the split's
    reference and the verdicts `grainproof verify --alpha` gives."""
    from grainproof.reference import fit_reference_model
    from grainproof.services.references import device_nuisance_factory
    from grainproof.services.verification import ClaimFailure, verify_lots

    model = fit_reference_model(
        _lots(x, y[split.reference].tolist(), split.reference, "R"), nuisance_factory=device_nuisance_factory()
    )
    results = verify_lots(model, _lots(x, split.claimed_labels.tolist(), split.claimed_rows, "C"), alpha=alpha)
    failed = [r for r in results if isinstance(r, ClaimFailure)]
    if failed:
        raise ClaimError(f"A claim could not be verified: {failed[0]}")
    verdicts = [r for r in results if not isinstance(r, ClaimFailure)]
    return (
        np.array([v.origin_plausibility for v in verdicts], dtype=np.float64),
        np.array([v.flagged for v in verdicts], dtype=bool),
    )


PeerScores = Callable[..., tuple[np.ndarray, float]]


def load_protocol_peers(path: Path) -> tuple[dict[str, Callable[..., np.ndarray]], PeerScores]:
    """The protocol's peers and the function that scores them and sets their thresholds, from its file."""
    spec = importlib.util.spec_from_file_location("provenance_protocol", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ClaimError(f"No provenance protocol at {path}.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "PEERS") or not hasattr(module, "peer_scores"):
        raise ClaimError(f"{path} defines no PEERS and peer_scores: is it the provenance protocol?")
    return dict(module.PEERS), module.peer_scores


def run_provenance_bench(
    x: np.ndarray,
    y: np.ndarray,
    *,
    mode: str,
    seeds: Sequence[int],
    alpha: float = 0.05,
    protocol: Path | None = None,
    peer_rules: Sequence[str] = ("quantile",),
    progress: ProgressCallback | None = None,
) -> ProvenanceBenchResult:
    """grainproof (and, given the protocol's file, its peers under each rule of `peer_rules`) on the protocol's
    splits for each seed."""
    unknown = [rule for rule in peer_rules if rule not in PEER_RULES]
    if unknown or not peer_rules:
        raise ClaimError(f"Peer rule {unknown[0] if unknown else ''!r} is not one of {', '.join(PEER_RULES)}.")
    peers, peer_scores = load_protocol_peers(protocol) if protocol is not None else ({}, None)
    with warnings.catch_warnings():
        # A label of fewer rows than folds is what the protocol splits too (pottery's two-row site): not news; nor
        # is the open set's shrinkage LDA meeting that label with one row in a reference.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        warnings.filterwarnings("ignore", message="Only one sample available", category=UserWarning)
        all_splits = {seed: protocol_splits(x, y, mode, seed) for seed in seeds}
    total, done = sum(len(s) for s in all_splits.values()) * (1 + len(peers)), 0
    rows: list[ProvenanceRow] = []
    failed: list[tuple[str, str]] = []
    for method in [OURS, *peers]:
        try:
            # Per rule, per seed: the claims' scores, flags and whether each claim is genuine.
            collected: dict[str, dict[int, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]]] = {}
            for seed, splits in all_splits.items():
                for split in splits:
                    if method == OURS:
                        score, flag = grainproof_claims(x, y, split, alpha)
                        flags = {OURS: flag}
                    else:
                        assert peer_scores is not None
                        score, flags = _peer_flags(method, peers[method], peer_scores, x, y, split, alpha, peer_rules)
                    for name, flag in flags.items():
                        scores, flag_list, genuine = collected.setdefault(name, {}).setdefault(seed, ([], [], []))
                        scores.append(score)
                        flag_list.append(flag)
                        genuine.append(split.genuine)
                    done += 1
                    if progress:
                        progress(done, total)
        except ValueError as exc:  # a peer that cannot fit this table (too few rows of a label for its k)
            if method == OURS:
                raise
            failed.append((method, str(exc).splitlines()[0][:200]))
            continue
        rows.extend(
            _row(name, int(seed), *parts) for name, by_seed in collected.items() for seed, parts in by_seed.items()
        )
    if progress:
        progress(total, total)
    return ProvenanceBenchResult(
        mode=mode,
        alpha=alpha,
        seeds=tuple(int(s) for s in seeds),
        rows=tuple(rows),
        failed_peers=tuple(failed),
        peer_rules=tuple(peer_rules),
    )


def _peer_flags(
    method: str,
    peer: Callable[..., np.ndarray],
    peer_scores: PeerScores,
    x: np.ndarray,
    y: np.ndarray,
    split: ProtocolSplit,
    alpha: float,
    peer_rules: Sequence[str],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A peer's scores of the split's claims and its flags under each rule, named as its rows are.

    The out-of-fold scores are recorded as the protocol's own `peer_scores` computes them (its first call scores
    the claims, the others the reference's held-out folds), and checked against the threshold it returns, so both
    rules read the very same scores."""
    calls: list[np.ndarray] = []

    def recorded(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(np.asarray(peer(*args, **kwargs), dtype=np.float64))
        return calls[-1]

    with warnings.catch_warnings():
        # The peers' own sklearn warnings on labels of one or two rows, a few hundred a table.
        warnings.simplefilter("ignore")
        score, threshold = peer_scores(recorded, x, y, split.reference, split.claimed_rows, split.claimed_labels, alpha)
    flags = {}
    if "quantile" in peer_rules:
        flags[method] = score <= threshold
    if "p-value" in peer_rules:
        out_of_fold = np.concatenate(calls[1:]) if len(calls) > 1 else np.empty(0)
        with np.errstate(invalid="ignore"):  # a peer's -inf scores make the quantile NaN, the protocol's too
            same = len(out_of_fold) > 0 and np.isclose(np.quantile(out_of_fold, alpha), threshold, equal_nan=True)
        if not same:
            raise ClaimError(
                "The protocol's peer_scores no longer scores the claims first and then the reference's folds: "
                "the p-value rule cannot read its out-of-fold scores."
            )
        from grainproof.scoring.conformal import conformal_p_value

        # Larger means less like a genuine claim for a conformal p-value; a peer's score rises with plausibility,
        # so both are negated. A peer's -inf (a label it cannot score) then ranks as the least plausible.
        flags[method + P_VALUE_SUFFIX] = conformal_p_value(np.sort(-out_of_fold), -score) <= alpha
    return score, flags


def _row(
    method: str, seed: int, scores: list[np.ndarray], flags: list[np.ndarray], genuine: list[np.ndarray]
) -> ProvenanceRow:
    """A method's figures over every split of one seed, computed as the protocol computes them."""
    from grainproof.scoring.evaluation import auroc

    s, f, g = np.concatenate(scores), np.concatenate(flags), np.concatenate(genuine)
    return ProvenanceRow(
        method=method,
        seed=seed,
        false_alarm=float(f[g].mean()),
        detection=float(f[~g].mean()),
        # Scores rise with plausibility; ranks put a peer's -inf (a label it cannot score) below every finite
        # score, as the protocol's replacement by the smallest finite score minus one does.
        auroc=auroc(-s[g], -s[~g]),
        n_genuine=int(g.sum()),
        n_false=int((~g).sum()),
    )
