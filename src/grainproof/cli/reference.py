"""`grainproof reference build`, `grainproof verify`, `grainproof evaluate` and `grainproof bench scoring`."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import typer
from rich.table import Table

from grainproof.cli import app, bench_app
from grainproof.cli._output import json_option, print_json
from grainproof.errors import GrainproofError
from grainproof.progress import console, err_console, progress_bar

if TYPE_CHECKING:
    from grainproof.domain import Verdict
    from grainproof.services.verification import ClaimFailure

#: `grainproof verify` shows this many of a batch's verdicts, the least plausible first (all are in --out).
VERIFY_TABLE_ROWS = 20

reference_app = typer.Typer(help="Build and inspect reference models (the distributions claims are scored against).")
app.add_typer(reference_app, name="reference")


@reference_app.command("build")
def build(
    manifest: Path = typer.Argument(..., help="Manifest CSV of reference lots (f_* features, or photos to embed)."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (replaced atomically)."),
    region_set: str | None = typer.Option(None, "--region-set", help="Region set, e.g. fr-departements."),
    origin_units: str = typer.Option(
        "regions", "--origin-units", help="regions (region codes) or zones (provenance zones, GEO's HDBSCAN)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the subsample the reduced space is fitted on."),
    folds: int = typer.Option(5, "--folds", help="Cross-conformal calibration folds."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data, same results)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster address (default: local Ray)."),
    as_json: bool = json_option(),
) -> None:
    """Fit a reference model from reference lots and save it as a versioned directory."""
    from grainproof.manifest import read_manifest, units_beside
    from grainproof.reference import ModelOptions
    from grainproof.reference.report import build_warnings
    from grainproof.scale.engines import chunk_runner, photo_embedder
    from grainproof.services.references import build_reference_model
    from grainproof.settings import get_settings

    runner = chunk_runner(engine, ray_address)
    lots = read_manifest(manifest)
    units = units_beside(manifest)
    needs_photos = any(lot.features is None for lot in lots)
    with progress_bar("embedding photos" if needs_photos else "building reference", None) as update:
        model = build_reference_model(
            lots,
            out,
            units=units,
            region_set=region_set,
            seed=seed,
            progress=update,
            base_dir=manifest.parent,
            options=ModelOptions(folds=folds),
            embedder=photo_embedder(engine, ray_address) if needs_photos else None,
            runner=runner,
            origin_units=origin_units,
        )
    warnings = build_warnings(model, get_settings().alpha)
    if as_json:
        species = [
            {
                "species": name,
                "varieties": list(ref.varieties),
                "origin_units": len(ref.origins),
                "seasons": list(ref.seasons),
                "reference_lots": len(ref.lot_ids),
                "reduced_dim": ref.dim,
                "variety_dim": ref.variety_space.dim,
                # The cap on the cells' t degrees of freedom fitted to the lots; null: each group's own t.
                "tail_dof": round(ref.tail_dof, 2) if math.isfinite(ref.tail_dof) else None,
            }
            for name, ref in sorted(model.species.items())
        ]
        print_json({"version": model.version, "model_dir": str(out), "species": species, "warnings": warnings})
        return
    table = Table(title=f"reference model {model.version} -> {out}")
    numbers = ("reference lots", "reduced dim", "tails (t dof)")
    for column in ("species", "varieties", "origin units", "seasons", *numbers):
        table.add_column(column, justify="right" if column in numbers else "left")
    for name, ref in sorted(model.species.items()):
        table.add_row(
            name,
            ", ".join(ref.varieties),
            str(len(ref.origins)),
            ", ".join(str(s) for s in ref.seasons),
            str(len(ref.lot_ids)),
            str(ref.dim),
            f"{ref.tail_dof:.1f}" if math.isfinite(ref.tail_dof) else "groups' own",
        )
    console.print(table)
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)


@app.command("verify")
def verify(
    model_dir: Path = typer.Argument(..., help="Reference model directory (from `grainproof reference build`)."),
    claims: Path = typer.Argument(..., help="Manifest CSV of claims to verify (f_* features, or photos)."),
    out: Path = typer.Option(
        ...,
        "--out",
        help="JSON lines file: one verdict (or error record) per claim; a name ending in .csv writes flat CSV columns.",
    ),
    alpha: float | None = typer.Option(
        None, "--alpha", help="Flag when plausibility <= alpha (default: the GRAINPROOF_ALPHA setting)."
    ),
    fdr: float | None = typer.Option(None, "--fdr", help="Also flag the batch at this false-discovery rate (BH)."),
    strict: bool = typer.Option(
        False, "--strict", help="Exit 2 when any claim could not be verified (default: record it and go on)."
    ),
    exit_code: bool = typer.Option(
        False, "--exit-code", help="Exit 1 when at least one lot was flagged (for scripts), as `git diff` does."
    ),
    as_json: bool = json_option(),
) -> None:
    """Score every claim of a manifest and write one JSON verdict per line.

    A claim that cannot be verified gets an error record in its place and the batch goes on. Exit status:
    0 when the batch was verified; 1 with --exit-code when at least one lot was flagged; 2 when the run failed,
    or with --strict when any claim could not be verified.
    """
    from grainproof.manifest import read_manifest, units_beside
    from grainproof.reference import ReferenceModel
    from grainproof.services.verification import ClaimFailure, batch_flags, variety_columns, verify_lots

    if alpha is not None and not 0.0 < alpha < 1.0:
        raise GrainproofError(f"--alpha {alpha} must lie strictly between 0 and 1.")
    if fdr is not None and not 0.0 < fdr < 1.0:
        raise GrainproofError(f"--fdr {fdr} must lie strictly between 0 and 1.")
    model = ReferenceModel.load(model_dir)
    lots = read_manifest(claims)
    with progress_bar("verifying claims", len(lots)) as update:
        results = verify_lots(
            model, lots, alpha=alpha, base_dir=claims.parent, progress=update, units=units_beside(claims)
        )
    verdicts = [r for r in results if not isinstance(r, ClaimFailure)]
    failures = [r for r in results if isinstance(r, ClaimFailure)]
    flags_fdr = dict(zip((v.lot_id for v in verdicts), batch_flags(verdicts, fdr), strict=True)) if fdr else None
    claim_of = {lot.lot_id: lot.claim for lot in lots}

    def columns(verdict: Verdict) -> dict[str, Any]:
        claim = claim_of[verdict.lot_id]
        return variety_columns(verdict, claim.variety, model, claim.species)

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        if out.suffix.lower() == ".csv":
            _write_verdict_csv(handle, results, columns, flags_fdr, fdr)
        else:
            for result in results:
                row = result.as_dict()
                if flags_fdr is not None and not isinstance(result, ClaimFailure):
                    row["flagged_fdr"] = flags_fdr[result.lot_id]
                    row["fdr"] = fdr
                handle.write(json.dumps(row) + "\n")
    os.replace(tmp, out)
    flagged = sum(v.flagged for v in verdicts)
    least_plausible = sorted(verdicts, key=lambda v: v.plausibility)
    if as_json:
        print_json(
            {
                "model_version": model.version,
                "out": str(out),
                "claims": len(results),
                "verified": len(verdicts),
                "flagged": flagged,
                "could_not_verify": [failure.as_dict() for failure in failures],
                "alpha": verdicts[0].alpha if verdicts else alpha,
                "fdr": fdr,
                "flagged_fdr": sum(flags_fdr.values()) if flags_fdr is not None else None,
                # Every claim, least plausible first; the full verdicts are in --out.
                "verdicts": [
                    {
                        "lot_id": v.lot_id,
                        "plausibility": v.plausibility,
                        "status": v.status,
                        "flagged": v.flagged,
                        **columns(v),
                        "reason": v.reasons[0] if v.reasons else "",
                    }
                    for v in least_plausible
                ],
            }
        )
        if strict and failures:
            raise typer.Exit(2)
        if exit_code and flagged:
            raise typer.Exit(1)
        return
    shown = least_plausible[:VERIFY_TABLE_ROWS]
    table = Table(
        title=f"{len(verdicts)} claims verified against model {model.version} -> {out}",
        caption=f"the {len(shown)} lowest p-values of {len(verdicts)} claims; every verdict is in {out}"
        if len(shown) < len(verdicts)
        else None,
    )
    table.add_column("lot")
    table.add_column("plausibility", justify="right")
    table.add_column("variety p", justify="right")
    table.add_column("likeliest variety")
    table.add_column("purity (interval)", justify="right")
    table.add_column("verdict")
    table.add_column("reason")
    for verdict in shown:
        row = columns(verdict)
        table.add_row(
            verdict.lot_id,
            f"{verdict.plausibility:.3g}",
            "-" if row["variety_plausibility"] is None else f"{row['variety_plausibility']:.3g}",
            row["likeliest_variety"] or "-",
            "-" if row["purity"] is None else f"{row['purity']:.0%} ({row['purity_low']:.0%}–{row['purity_high']:.0%})",
            verdict.status + (f" ({', '.join(verdict.flagged_checks)})" if verdict.flagged_checks else ""),
            verdict.reasons[0],
        )
    console.print(table)
    without_purity = Counter(columns(v)["purity_note"] for v in verdicts if v.purity is None)
    for note, count in sorted(without_purity.items()):
        err_console.print(f"purity {note}: {count} lot(s).", highlight=False)
    for failure in failures:
        err_console.print(f"[red]could not verify {failure.lot_id}:[/] {failure.detail}", highlight=False)
    statuses = Counter(v.status for v in verdicts)
    level = f"alpha={verdicts[0].alpha:g}" if verdicts else f"alpha={alpha if alpha is not None else 'setting'}"
    summary = f"{len(results)} claims: {flagged} flagged at {level}"
    for status in ("cannot_flag", "uncalibrated"):
        if statuses[status]:
            summary += f", {statuses[status]} {status.replace('_', ' ')}"
    if failures:
        summary += f", {len(failures)} could not be verified (error records in {out})"
    if flags_fdr is not None:
        summary += f"; {sum(flags_fdr.values())} flagged at FDR {fdr:g} (Benjamini-Hochberg)"
    err_console.print(summary)
    if strict and failures:
        raise typer.Exit(2)
    if exit_code and flagged:
        raise typer.Exit(1)


def _write_verdict_csv(
    handle: TextIO,
    results: Sequence[Verdict | ClaimFailure],
    columns: Callable[[Verdict], dict[str, Any]],
    flags_fdr: dict[str, bool] | None,
    fdr: float | None,
) -> None:
    """One flat row per claim: the p-values, the variety and purity columns, the first reason (or the error)."""
    from grainproof.services.verification import ClaimFailure

    header = [
        "lot_id", "status", "flagged", "plausibility", "origin_plausibility", "season_plausibility",
        "variety_plausibility", "likeliest_variety", "likeliest_variety_p", "checks_plausibility", "purity",
        "purity_low", "purity_high",
        "purity_note", "flagged_checks", "reason",
    ]  # fmt: skip
    if flags_fdr is not None:
        header += ["flagged_fdr", "fdr"]
    writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for result in results:
        if isinstance(result, ClaimFailure):
            writer.writerow({"lot_id": result.lot_id, "status": "error", "reason": result.detail})
            continue
        row: dict[str, Any] = {
            "lot_id": result.lot_id,
            "status": result.status,
            "flagged": result.flagged,
            "plausibility": result.plausibility,
            "origin_plausibility": result.origin_plausibility,
            "season_plausibility": result.season_plausibility,
            **columns(result),
            "reason": result.reasons[0] if result.reasons else "",
        }
        if flags_fdr is not None:
            row.update(flagged_fdr=flags_fdr[result.lot_id], fdr=fdr)
        writer.writerow({key: "" if value is None else value for key, value in row.items()})


@app.command("evaluate")
def evaluate(
    manifest: Path = typer.Argument(..., help="Manifest CSV of labelled lots with f_* features (the truth)."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds."),
    alpha: float = typer.Option(0.05, "--alpha", help="Flag level for detection and false-alarm rates."),
    group_by: str = typer.Option("device", "--group-by", help="Fold groups: device (unseen phones), field or none."),
    region_set: str | None = typer.Option(None, "--region-set", help="Region set for neighbours (else distances)."),
    latent: Path | None = typer.Option(
        None, "--latent", help="Latent traits CSV for the oracle (default: latent_traits.csv beside the manifest)."
    ),
    peers: bool = typer.Option(True, "--peers/--no-peers", help="Also score the peer methods."),
    seed: int = typer.Option(0, "--seed", help="Seed for folds and derived false claims."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Also draw false alarms and detection against alpha to this .png or .svg file."
    ),
    as_json: bool = json_option(),
) -> None:
    """Cross-validate the scoring on labelled lots: AUROC, detection and false-alarm rate per fraud kind.

    The per-kernel units `grainproof embed` wrote beside the manifest (MANIFEST.units.npz), when there, give the
    purity check its kernels; without them purity is not evaluated.
    """
    from grainproof.manifest import read_manifest, units_beside
    from grainproof.services.evaluation import evaluate_lots, read_latent_traits
    from grainproof.services.origins import load_regions

    if plot is not None:
        from grainproof.services.evaluation_plot import PLOT_FORMATS

        if plot.suffix.lower() not in PLOT_FORMATS:
            raise GrainproofError(f"--plot {plot}: use a .png or .svg file name.")
    lots = read_manifest(manifest, check_photos=False)
    regions = load_regions(region_set)
    adjacency = {c: regions.neighbours(c) for c in regions.codes} if regions is not None else None
    latent_path = latent or manifest.parent / "latent_traits.csv"
    traits = read_latent_traits(latent_path) if latent_path.is_file() else None
    units = units_beside(manifest)
    if units is None and not as_json:
        err_console.print(f"No per-kernel units beside {manifest} (from `grainproof embed`): purity is not evaluated.")
    with progress_bar("cross-validating", folds) as update:
        report = evaluate_lots(
            lots,
            folds=folds,
            alpha=alpha,
            group_by=group_by,
            seed=seed,
            origin_adjacency=adjacency,
            latent=traits,
            with_peers=peers,
            progress=update,
            units=units,
        )
    if plot is not None:
        from grainproof.services.evaluation_plot import evaluation_plot

        err_console.print(f"drew false alarms and detection against alpha to {evaluation_plot(report, plot)}")
    if as_json:
        print_json(report.as_dict())
        return
    kinds = sorted({k for m in report.methods for k in m.kinds})
    table = Table(
        title=f"{report.n_lots} lots, {report.folds} folds grouped by {report.group_by}, alpha={report.alpha:g}"
        + (
            f"; origins kept out of the reference: {', '.join(report.held_out_origins)}"
            if report.held_out_origins
            else ""
        )
    )
    table.add_column("method")
    table.add_column("false alarm", justify="right")
    for kind in kinds:
        table.add_column(f"{kind}\nAUROC / detected", justify="right")
    for method in (*report.methods, *report.ours_by_measurement):
        cells = [
            f"{method.kinds[k].auroc:.3f} / {method.kinds[k].detection:.3f}" if k in method.kinds else "-"
            for k in kinds
        ]
        table.add_row(method.method, f"{method.false_alarm:.3f} (n={method.n_genuine})", *cells)
    console.print(table)


@bench_app.command("scoring")
def bench_scoring(
    lots: int = typer.Option(20_000, "--lots", help="Reference lots in the synthetic world."),
    dim: int = typer.Option(256, "--dim", help="Embedding dimension."),
    update_lots: int = typer.Option(2_000, "--update-lots", help="Lots added by the incremental update."),
    claims: int = typer.Option(500, "--claims", help="Claims verified for the latency figure."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = json_option(),
) -> None:
    """Build, update and verify on a Gaussian world: times against full rebuild and raw-distance baselines."""
    from dataclasses import asdict

    from grainproof.services.scoring_bench import run_scoring_bench

    with progress_bar("benchmarking scoring", 5) as update:
        rows = run_scoring_bench(lots=lots, dim=dim, update_lots=update_lots, claims=claims, seed=seed, progress=update)
    if as_json:
        print_json({"lots": lots, "dim": dim, "rows": [asdict(row) for row in rows]})
        return
    table = Table(title=f"scoring benchmark: {lots} reference lots, d={dim}")
    table.add_column("measure")
    table.add_column("ours", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("baseline is")
    for row in rows:
        table.add_row(row.measure, row.ours, row.baseline, row.ratio, row.baseline_name)
    console.print(table)
