"""`grainproof embed` (photos of a manifest to f_* columns) and the `bench embed` / `bench invariance` benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from grainproof.cli import app, bench_app
from grainproof.cli._output import json_option, json_out_option, print_json, write_json
from grainproof.errors import GrainproofError
from grainproof.progress import console, progress_bar


def _settings(backbone: str | None, runtime: str | None, threads: int | None) -> Any:
    from dataclasses import replace

    from grainproof.settings import get_settings

    settings = get_settings()
    changes: dict[str, Any] = {}
    if backbone:
        changes["backbone"] = backbone
    if runtime:
        from grainproof.embed.runtime import RUNTIMES

        if runtime not in RUNTIMES:
            raise GrainproofError(f"--runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}.")
        changes["embed_runtime"] = runtime
    if threads is not None:
        changes["torch_threads"] = threads
    return replace(settings, **changes) if changes else settings


@app.command("embed")
def embed(
    manifest: Path = typer.Argument(..., help="Lot manifest CSV whose `photos` column lists each lot's photos."),
    out: Path = typer.Option(..., "--out", help="Where to write the manifest with f_* columns added."),
    backbone: str | None = typer.Option(None, help="Backbone name (default: GRAINPROOF_BACKBONE)."),
    checkpoint: Path | None = typer.Option(None, help="Local weights file for a timm backbone."),
    runtime: str | None = typer.Option(None, help="openvino (default, fastest), onnxruntime or torch."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data actors)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster address (default: local Ray)."),
    as_json: bool = json_option(),
) -> None:
    """Embed every lot's photos (cached by photo content) and write the manifest with lot vectors."""
    from dataclasses import asdict

    from grainproof.embed import embed_manifest, get_embedder
    from grainproof.scale.engines import photo_embedder

    settings = _settings(backbone, runtime, None)
    embedder = photo_embedder(
        engine, ray_address, name=settings.backbone, checkpoint_path=checkpoint, settings=settings
    )
    if embedder is None:
        embedder = get_embedder(settings.backbone, checkpoint_path=checkpoint, settings=settings)
    with progress_bar("embedding photos") as progress:
        written = embed_manifest(manifest, out, embedder=embedder, progress=progress)
    if as_json:
        print_json({**asdict(written), "features": embedder.dim, "backbone": embedder.backbone_id})
        return
    console.print(
        f"wrote {written.path} ({written.lots} lots, {embedder.dim} features, backbone {embedder.backbone_id})"
    )
    console.print(f"wrote {written.units} (per-kernel unit vectors)")
    if not written.warnings:
        console.print(f"no warnings on {written.photos} photos")
        return
    # One line per kind of warning: the same advice repeated for every photo would hide the rare ones.
    table = Table(title=f"warnings on {written.photos} photos (each lot's are in the embedding_warnings column)")
    table.add_column("photos", justify="right")
    table.add_column("warning")
    table.add_column("for example")
    for counted in written.warnings:
        table.add_row(str(counted.photos), counted.warning, counted.example)
    console.print(table)


@bench_app.command("embed")
def bench_embed_command(
    images: int = typer.Option(
        16, help="Canvases per round (320x608: a calibrated tray photo, 101 x 53 mm at 6 px/mm)."
    ),
    rounds: int = typer.Option(3, help="Timed rounds; each runs the naive path then ours; medians are reported."),
    threads: int | None = typer.Option(None, help="CPU threads for our path (default: GRAINPROOF_TORCH_THREADS)."),
    runtime: str | None = typer.Option(None, help="Our runtime: openvino (default), onnxruntime or torch."),
    photos: Path | None = typer.Option(
        None,
        "--photos",
        help="Also time whole processes on these photos (a folder, one lot per photo, or a lot manifest): "
        "a plain timm loop vs `grainproof embed`, start-up included. E.g. ../shared/data/rice.",
    ),
    process_rounds: int = typer.Option(1, "--process-rounds", help="Rounds of the whole-process comparison."),
    measure_rounds: int = typer.Option(5, help="Timed rounds of measuring a 12-megapixel photo's kernels."),
    json_out: Path | None = json_out_option(),
    as_json: bool = json_option(),
) -> None:
    """Images per second: naive timm path (one image at a time) vs ours, their ratio, and share of matmul peak;
    the time to measure a 12-megapixel photo's kernels without the card, stage by stage, on one core; with
    --photos, whole `grainproof embed` processes against a plain timm loop on the same photos."""
    from grainproof.embed.bench import bench_embed, bench_embed_process

    settings = _settings(None, runtime, threads)
    with progress_bar("network: benchmark rounds", rounds) as progress:
        result = bench_embed(settings=settings, images=images, rounds=rounds, progress=progress)
    process = None
    if photos is not None:
        with progress_bar("whole processes: loop, ours cold, ours warm", process_rounds) as progress:
            process = bench_embed_process(photos, settings=settings, rounds=process_rounds, progress=progress)
    measurement = _measure_speed(measure_rounds)
    figures = {
        **result.as_dict(),
        "measurement": measurement.as_dict(),
        "whole_process": process.as_dict() if process is not None else None,
    }
    write_json(json_out, figures)
    if as_json:
        print_json(figures)
        return
    table = Table(title=f"bench embed: {result.backbone_id}, canvas {result.canvas[0]}x{result.canvas[1]}")
    table.add_column("path")
    table.add_column("images/s", justify="right")
    table.add_row("naive (timm, eval+no_grad, one image at a time)", f"{result.naive_images_per_s:.2f}")
    table.add_row(f"ours ({result.runtime}, {result.threads} threads, batched)", f"{result.ours_images_per_s:.2f}")
    console.print(table)
    console.print(f"speed-up: {result.speedup:.2f}x   min cosine to naive vectors: {result.min_cosine_to_naive:.6f}")
    console.print(
        f"backbone: {result.gflops_per_image:.2f} GFLOP/image; fp32 matmul peak measured now: "
        f"{result.matmul_gflops_per_s:.1f} GFLOP/s; ours reaches {100 * result.fraction_of_matmul_peak:.1f}% of it"
    )
    _print_measure_speed(measurement)
    if process is None:
        console.print("whole processes: not timed (give --photos, e.g. --photos ../shared/data/rice)")
        return
    timed = Table(
        title=f"whole processes, start-up included: {process.photos} photos from {process.source}, "
        f"{process.threads} threads, median of {process.rounds} round(s)"
    )
    timed.add_column("process")
    timed.add_column("seconds", justify="right")
    timed.add_column("photos/s", justify="right")
    timed.add_column("loop / this", justify="right")
    timed.add_row(
        "plain timm loop (tf_efficientnet_lite0, 224x224, one photo at a time)",
        f"{process.naive_s:.2f}",
        f"{process.photos / process.naive_s:.1f}",
        "1.00x",
    )
    timed.add_row(
        f"grainproof embed, fresh cache ({process.runtime}: exports and compiles the network)",
        f"{process.ours_cold_s:.2f}",
        f"{process.photos / process.ours_cold_s:.1f}",
        f"{process.speedup_cold:.2f}x",
    )
    timed.add_row(
        "grainproof embed, network cached, photos new",
        f"{process.ours_warm_s:.2f}",
        f"{process.photos / process.ours_warm_s:.1f}",
        f"{process.speedup_warm:.2f}x",
    )
    console.print(timed)


def _measure_speed(rounds: int) -> Any:
    """Time measuring a 12-megapixel photo's kernels without the card, stage by stage, on one core."""
    from grainproof.embed.measure_bench import bench_measure

    with progress_bar("measuring a 12-megapixel photo", rounds) as progress:
        return bench_measure(rounds=rounds, progress=progress)


def _print_measure_speed(speed: Any) -> None:
    table = Table(
        title=f"kernel measurement without the card: {speed.photo[0]}x{speed.photo[1]} JPEG, "
        f"{speed.kernels_found} objects, 1 core (CPU ms, median of {speed.rounds})"
    )
    table.add_column("stage")
    table.add_column("ms", justify="right")
    for stage, ms in speed.stages_ms.items():
        table.add_row(stage, f"{ms:.1f}")
    table.add_row("total (ours)", f"{speed.total_ms:.1f}")
    table.add_row("baseline: the same at the decoded resolution", f"{speed.full_resolution_ms:.1f}")
    console.print(table)
    verdict = "within" if speed.total_ms <= speed.budget_ms else "over"
    console.print(f"speed-up {speed.speedup:.2f}x; {verdict} the {speed.budget_ms:.0f} ms budget per photo")


def _phone_scaled(lots: list[Any], measured: int) -> tuple[Any, Any]:
    """The lots' vectors with sizes measured without the card on a per-phone scale fitted to these lots."""
    import numpy as np

    from grainproof.reference.phone_scale import apply_phone_scale, cell_labels, fit_phone_scale

    vectors = np.array([lot.features for lot in lots], dtype=np.float64)
    phones = np.array([lot.device or "" for lot in lots])
    varieties = np.array([lot.claim.variety for lot in lots])
    regions = np.array([lot.claim.origin.region or "" for lot in lots])
    cells = cell_labels(varieties, regions, np.array([lot.claim.season for lot in lots]))
    scale = fit_phone_scale(vectors, phones, varieties, cells=cells, measured=measured)
    return apply_phone_scale(vectors, phones, varieties, scale)[0], scale


@bench_app.command("invariance")
def bench_invariance_command(
    world: Path | None = typer.Argument(None, help="A world from `grainproof simulate` (default: simulate one)."),
    held_out: int = typer.Option(4, help="Phone profiles kept out of training; the test lots use only these."),
    lots: int = typer.Option(240, help="Lots to simulate when no WORLD is given."),
    seed: int = typer.Option(0, help="Seed for the held-out phones (and the simulated world)."),
    json_out: Path | None = json_out_option(),
    as_json: bool = json_option(),
) -> None:
    """Between-region / within-region-across-phones distance ratio on unseen phones, without and with our handling."""
    import tempfile

    from grainproof.embed.bench import bench_invariance, simulate_bench_world

    with tempfile.TemporaryDirectory(prefix="grainproof-bench-world-") as scratch:
        label = str(world) if world is not None else f"simulated ({lots} lots, seed {seed})"
        if world is None:
            with progress_bar("simulating a world") as simulate_progress:
                world = simulate_bench_world(Path(scratch), lots=lots, seed=seed, progress=simulate_progress)
        with progress_bar("embedding photos") as progress:
            result = bench_invariance(world, held_out=held_out, seed=seed, progress=progress, label=label)
    write_json(json_out, result.as_dict())
    if as_json:
        print_json(result.as_dict())
        return
    table = Table(title=f"bench invariance: {result.world}")
    table.add_column("lots from unseen phones")
    table.add_column("between regions", justify="right")
    table.add_column("within region, across phones", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("region accuracy (1-NN)", justify="right")
    for label, figures in (
        ("without device handling (card ignored)", result.without),
        ("calibration card only", result.card_only),
        (f"card + learned correction ({result.removed_directions} directions)", result.with_device_handling),
    ):
        table.add_row(
            label,
            f"{figures.between_region:.3f}",
            f"{figures.within_region_across_phones:.3f}",
            f"{figures.ratio:.3f}",
            f"{figures.region_accuracy:.3f}",
        )
    console.print(table)
    console.print(
        f"trained on {result.train_lots} lots from {', '.join(result.train_devices)}; "
        f"tested on {result.test_lots} lots from unseen {', '.join(result.held_out_devices)}"
    )


@bench_app.command("measurements")
def bench_measurements_command(
    embedded: Path = typer.Argument(..., help="An embedded manifest of a simulated world (`grainproof embed`)."),
    latent: Path = typer.Option(..., "--latent", help="The world's latent_traits.csv (the truth)."),
    json_out: Path | None = json_out_option(),
    as_json: bool = json_option(),
) -> None:
    """How well the kernel measurements in the vectors track the simulator's true lot traits."""
    from dataclasses import asdict

    from grainproof.domain import measured_feature_count
    from grainproof.embed.bench import measurement_agreement
    from grainproof.embed.embedder import MEASURED_FEATURES
    from grainproof.manifest import read_manifest
    from grainproof.services.evaluation import read_latent_table

    lots = [lot for lot in read_manifest(embedded) if lot.features is not None]
    backbones = {lot.extra.get("backbone", "") for lot in lots}
    if len(backbones) != 1 or measured_feature_count(next(iter(backbones))) != len(MEASURED_FEATURES):
        raise GrainproofError(f"{embedded} was not embedded with kernel measurements; run `grainproof embed` again.")
    columns, traits = read_latent_table(latent)
    # Sizes measured without the card are compared on the per-phone scale a reference of these lots learns.
    vectors, _ = _phone_scaled(lots, len(MEASURED_FEATURES))
    figures = measurement_agreement(
        {lot.lot_id: vector for lot, vector in zip(lots, vectors, strict=True)},
        {lot.lot_id: lot.claim.variety for lot in lots},
        traits,
        columns,
        MEASURED_FEATURES,
    )
    data = {"embedded": str(embedded), "figures": [asdict(f) for f in figures]}
    write_json(json_out, data)
    if as_json:
        print_json(data)
        return
    table = Table(title=f"bench measurements: {embedded}")
    table.add_column("measured feature")
    table.add_column("true trait")
    table.add_column("r within varieties", justify="right")
    table.add_column("lots", justify="right")
    for figure in figures:
        table.add_row(figure.feature, figure.trait, f"{figure.correlation:.3f}", str(figure.lots))
    console.print(table)
