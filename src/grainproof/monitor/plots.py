"""The monitor's pictures, drawn server-side (matplotlib's object API on the Agg canvas, never pyplot, like
the maps): the realised weekly flag rate of each group against alpha and its binomial band."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import timedelta

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from grainproof.monitor.calibration import WeeklyRate

_MAX_GROUPS = 8


def weekly_rate_plot(rates: Sequence[WeeklyRate], *, alpha: float, title: str) -> bytes:
    """A PNG: one panel per group (the busiest `_MAX_GROUPS`), weekly flag rate with its exact 95 % interval,
    alpha as a line and the band a week of genuine lots falls in 95 % of the time shaded around it."""
    groups: dict[str, list[WeeklyRate]] = {}
    for rate in rates:
        groups.setdefault(rate.group, []).append(rate)
    busiest = sorted(groups, key=lambda g: -sum(r.lots for r in groups[g]))[:_MAX_GROUPS]
    panels = max(1, len(busiest))
    figure = Figure(figsize=(8.0, 1.9 * panels + 0.6), dpi=96, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    figure.suptitle(title, fontsize=11)
    if not busiest:
        axes[0].text(0.5, 0.5, "no verifications yet", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    for axis, group in zip(axes, busiest, strict=False):
        weeks = groups[group]
        x = [w.week for w in weeks]
        # The band as one bar a week (its width depends on the week's lots): readable with a single week too.
        axis.bar(
            x,
            [w.alpha_band[1] - w.alpha_band[0] for w in weeks],
            bottom=[w.alpha_band[0] for w in weeks],
            width=6.0,
            color="#9ecae1",
            alpha=0.6,
            label="95 % band of genuine lots",
        )
        axis.axhline(alpha, color="#3182bd", linewidth=1.0, label=f"alpha = {alpha:g}")
        low = [w.flag_rate - w.flag_rate_interval[0] for w in weeks]
        high = [w.flag_rate_interval[1] - w.flag_rate for w in weeks]
        colours = ["#d62728" if w.outside_band else "#333333" for w in weeks]
        axis.errorbar(x, [w.flag_rate for w in weeks], yerr=[low, high], fmt="none", ecolor="#999999", linewidth=0.8)
        axis.scatter(x, [w.flag_rate for w in weeks], c=colours, s=18, zorder=3, label="realised flag rate")
        axis.set_ylabel("flag rate", fontsize=8)
        axis.set_title(f"{group} ({sum(w.lots for w in weeks)} lots)", fontsize=9, loc="left")
        axis.set_ylim(0.0, max(0.05, min(1.0, max(w.flag_rate_interval[1] for w in weeks) * 1.05)))
        axis.tick_params(labelsize=7)
    if busiest:
        first = min(r.week for r in rates)
        last = max(r.week for r in rates)
        axes[-1].set_xlim(first - timedelta(days=7), last + timedelta(days=7))
        locator = AutoDateLocator(maxticks=10)
        axes[-1].xaxis.set_major_locator(locator)
        axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
        axes[0].legend(fontsize=7, loc="upper left")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
