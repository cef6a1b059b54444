"""`grainproof bench provenance`: the shared provenance protocol over several split seeds (docs/scoring.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from grainproof.cli import bench_app
from grainproof.cli._output import json_option, json_out_option, print_json, write_json
from grainproof.errors import GrainproofError
from grainproof.progress import console, progress_bar


@bench_app.command("provenance")
def bench_provenance_command(
    data: Path = typer.Argument(..., help="Labelled CSV table (one row per lot)."),
    label: str = typer.Argument(..., help="The column holding each row's origin label."),
    features: str = typer.Argument(..., help="Feature columns, comma-separated, or 'f_*' for every f_ column."),
    mode: str = typer.Option("closed", "--mode", help="closed, openset, or both (the protocol's modes)."),
    seeds: str = typer.Option("0,1,2,3,4,5", "--seeds", help="Split seeds, comma-separated (the protocol uses 7)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Flag level, as `grainproof verify --alpha`."),
    protocol: Path | None = typer.Option(
        None, "--protocol", help="The protocol's file (../shared/tools/provenance_protocol.py): its peers run too."
    ),
    peer_rule: str = typer.Option(
        "quantile",
        "--peer-rule",
        help="How the peers' flags are set from their out-of-fold scores: quantile (the protocol's), p-value "
        "(grainproof's conformal p-value), or both.",
    ),
    max_false_alarm: float = typer.Option(
        0.06, "--max-false-alarm", help="A peer counts as best only with a mean false alarm at most this."
    ),
    json_out: Path | None = json_out_option(),
    as_json: bool = json_option(),
) -> None:
    """grainproof beside the protocol's textbook peers on the protocol's splits, for several split seeds: each
    method's mean false alarm, detection and AUROC; baseline: the best peer at a false alarm the issue allows.

    `--peer-rule p-value` flags a peer's claim the way grainproof flags one, by a conformal p-value among the same
    out-of-fold scores the protocol takes its quantile of: both then keep the step p >= 1 / (n + 1), which on
    references of a few dozen lots is where they part (docs/scoring.md)."""
    from grainproof.services.provenance_bench import MODES, OURS, PEER_RULES, read_table, run_provenance_bench

    modes = MODES if mode == "both" else (mode,)
    if any(m not in MODES for m in modes):
        raise GrainproofError(f"--mode {mode!r} is not one of closed, openset, both.")
    rules = PEER_RULES if peer_rule == "both" else (peer_rule,)
    if any(r not in PEER_RULES for r in rules):
        raise GrainproofError(f"--peer-rule {peer_rule!r} is not one of quantile, p-value, both.")
    if not 0.0 < alpha < 1.0:
        raise GrainproofError(f"--alpha {alpha} must lie strictly between 0 and 1.")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError as exc:
        raise GrainproofError(f"--seeds {seeds!r} must be whole numbers separated by commas.") from exc
    if not seed_list:
        raise GrainproofError("--seeds names no seed.")
    x, y = read_table(data, label, features)
    results = []
    for m in modes:
        with progress_bar(f"{m} splits", None) as update:
            results.append(
                run_provenance_bench(
                    x, y, mode=m, seeds=seed_list, alpha=alpha, protocol=protocol, peer_rules=rules, progress=update
                )
            )
    document = {"data": str(data), "label": label, "results": [r.as_dict() for r in results]}
    write_json(json_out, document)
    if as_json:
        print_json(document)
        return
    for result in results:
        table = Table(
            title=f"bench provenance: {data.name}, {result.mode}, split seeds {seeds}, alpha {alpha:g} "
            f"(means over the seeds; per seed with --json)"
        )
        for column in ("method", "false alarm", "detection", "AUROC"):
            table.add_column(column, justify="left" if column == "method" else "right")
        means = result.means()
        for method, (false_alarm, detection, auroc) in means.items():
            table.add_row(method, f"{false_alarm:.3f}", f"{detection:.3f}", f"{auroc:.3f}")
        console.print(table)
        ours = means[OURS][1]
        for rule in result.peer_rules:
            best = result.best_peer(max_false_alarm, rule)
            if best is None:
                continue
            ratio = f"{ours / best[1]:.2f}" if best[1] > 0 else "n/a"
            console.print(
                f"best peer ({rule} rule) at false alarm <= {max_false_alarm:g}: {best[0]} {best[1]:.3f}; "
                f"grainproof {ours:.3f} (ratio {ratio})",
                highlight=False,
            )
        for method, why in result.failed_peers:
            console.print(f"{method}: no row ({why})", highlight=False)
