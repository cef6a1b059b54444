"""The picture of an evaluation: the realised false-alarm rate against alpha (is each p-value what it says?) and
the detection of each kind of false declaration against alpha (what the verdict catches), drawn like the
monitor's plots (matplotlib's object API on the Agg canvas, never pyplot)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import binom

from grainproof.errors import GrainproofError
from grainproof.scoring.evaluation import CURVE_ALPHAS, MethodResult
from grainproof.services.evaluation import OURS, VERDICT, EvaluationReport

PLOT_FORMATS = (".png", ".svg")


def genuine_band(n_genuine: int, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The range a valid method's realised false-alarm rate falls in 95 % of the time over n genuine claims."""
    low, high = binom.interval(0.95, n_genuine, alphas)
    return np.asarray(low) / n_genuine, np.asarray(high) / n_genuine


def evaluation_plot(report: EvaluationReport, out: Path) -> Path:
    """Draw the report's rate curves to `out` (.png or .svg); returns it. Left: realised false-alarm rate of
    every p-value method against alpha, with the diagonal and the binomial band of a valid one. Right:
    detection per kind of false declaration against alpha, for the verdict (or the origin check)."""
    if out.suffix.lower() not in PLOT_FORMATS:
        raise GrainproofError(f"Cannot draw the evaluation to {out.name}: use a .png or .svg file name.")
    curved = [m for m in report.methods if "genuine" in m.curves]
    if not curved:
        raise GrainproofError("The evaluation has no genuine claims to draw a false-alarm curve from.")
    alphas = np.asarray(CURVE_ALPHAS)
    figure = Figure(figsize=(11.0, 4.8), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    n_genuine = max(m.n_genuine for m in curved)
    low, high = genuine_band(n_genuine, alphas)
    left.fill_between(alphas, low, high, color="#9ecae1", alpha=0.5, label=f"95 % band, {n_genuine} genuine claims")
    left.plot(alphas, alphas, color="#333333", linestyle="--", linewidth=0.8, label="realised = alpha")
    for method in curved:
        mine = method.method.startswith(OURS)  # ours, the variety check, the verdict
        left.plot(
            alphas,
            method.curves["genuine"],
            marker="o",
            markersize=3,
            linewidth=1.6 if mine else 0.9,
            linestyle="-" if mine else ":",
            label=method.method,
        )
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_xlabel("alpha", fontsize=9)
        axis.tick_params(labelsize=8)
        axis.grid(True, which="major", linewidth=0.3)
    # Linear near zero (a method flagging no genuine claim at a small alpha still shows), logarithmic above.
    left.set_yscale("symlog", linthresh=CURVE_ALPHAS[0], linscale=0.5)
    left.set_ylim(0.0, 1.0)
    left.set_ylabel("genuine claims flagged", fontsize=9)
    left.set_title("False alarms: is each p-value what it says?", fontsize=10, loc="left")
    left.legend(fontsize=7, loc="upper left")
    shown = _detection_method(report)
    for kind, rates in sorted(shown.curves.items()):
        if kind != "genuine":
            right.plot(alphas, rates, marker="o", markersize=3, label=f"{kind} ({shown.kinds[kind].n})")
    right.plot(alphas, shown.curves["genuine"], color="#333333", linestyle="--", linewidth=0.8, label="genuine")
    right.set_ylim(0.0, 1.0)
    right.set_ylabel("claims flagged", fontsize=9)
    right.set_title(f"Detection: {shown.method}", fontsize=10, loc="left")
    right.legend(fontsize=7, loc="upper left")
    figure.suptitle(
        f"grainproof evaluate: {report.n_lots} lots, {report.folds} folds grouped by {report.group_by}", fontsize=11
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    try:
        figure.savefig(tmp, format=out.suffix.lower().lstrip("."))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _detection_method(report: EvaluationReport) -> MethodResult:
    """The verdict when it was evaluated (what a user gets), else the origin-and-season check."""
    by_name = {m.method: m for m in report.methods if "genuine" in m.curves}
    return by_name.get(VERDICT) or by_name.get(OURS) or next(iter(by_name.values()))
