"""`grainproof simulate`: render a synthetic world of grain lots (photos, truth, claims)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from grainproof.cli import app, bench_app
from grainproof.cli._output import json_option, print_json
from grainproof.errors import GrainproofError
from grainproof.progress import console, progress_bar


def _split(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _years(text: str) -> tuple[int, ...]:
    years = []
    for part in _split(text) or ():
        if not part.isdigit():
            raise GrainproofError(f"--seasons: {part!r} is not a year; give years like 2023,2024,2025.")
        years.append(int(part))
    return tuple(years)


@app.command("simulate")
def simulate(
    out: Path | None = typer.Option(
        None, "--out", help="Folder to write the world into (must be empty or a world); required unless listing."
    ),
    lots: int = typer.Option(200, "--lots", help="Number of lots."),
    photos_per_lot: int = typer.Option(3, "--photos-per-lot", help="Photos taken of each lot."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same world (byte-identical CSVs)."),
    seasons: str = typer.Option("2023,2024,2025", "--seasons", help="Harvest years, comma-separated."),
    devices: str | None = typer.Option(None, "--devices", help="Phone profiles to use, comma-separated (default all)."),
    regions: str | None = typer.Option(
        None, "--regions", help="Referenced départements, comma-separated codes (default: 20 cereal départements)."
    ),
    unreferenced: str | None = typer.Option(
        None,
        "--unreferenced",
        help="Départements kept out of the reference (lots for missing-origin claims); default 08,41,79; '' for none.",
    ),
    fraud_rate: float = typer.Option(0.3, "--fraud-rate", help="Share of false claims in claims.csv."),
    intake_share: float = typer.Option(
        0.2, "--intake-share", help="Share of fields whose lots are the day's intake (intake.csv), not reference."
    ),
    fraud_kinds: str | None = typer.Option(
        None, "--fraud-kinds", help="False-claim kinds to inject, comma-separated (default: all the world allows)."
    ),
    trays: str | None = typer.Option(None, "--trays", help="Tray backgrounds to use, comma-separated (default all)."),
    max_side: int | None = typer.Option(
        None, "--max-side", help="Cap the photos' long side in pixels (smaller, faster worlds for tests)."
    ),
    no_card: bool = typer.Option(
        False, "--no-card", help="Leave the calibration card off every tray (photos taken without the protocol)."
    ),
    workers: int | None = typer.Option(None, "--workers", help="Rendering processes (default: available cores)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a world already in --out."),
    list_profiles: bool = typer.Option(False, "--list-profiles", help="List phone profiles and trays, then exit."),
    as_json: bool = json_option(),
) -> None:
    """Render a synthetic world of grain lots: photos, lots.csv (truth), claims.csv (declarations).

    Also reference.csv (the truth of the reference lots) and intake.csv (the declarations of the other lots,
    from other fields): build a reference from the first and verify the second, so no lot is scored against
    itself.
    """
    from dataclasses import asdict

    from grainproof.simulate import DEFAULT_REGIONS, DEFAULT_UNREFERENCED, WorldConfig, simulate_world
    from grainproof.simulate.devices import PHONE_PROFILES
    from grainproof.simulate.render import TRAYS

    if list_profiles:
        if as_json:
            print_json({"phones": [asdict(p) for p in PHONE_PROFILES], "trays": [t.name for t in TRAYS]})
            return
        table = Table(title="Phone profiles")
        for column in ("name", "make", "model", "long side", "zoom", "JPEG q"):
            table.add_column(column)
        for p in PHONE_PROFILES:
            table.add_row(p.name, p.make, p.model, str(p.long_side), f"{p.zoom:.2f}", str(p.jpeg_quality))
        console.print(table)
        console.print("Trays: " + ", ".join(t.name for t in TRAYS))
        return
    if out is None:
        raise GrainproofError("Give the folder to write the world into with --out (or --list-profiles to list).")
    config = WorldConfig(
        lots=lots,
        photos_per_lot=photos_per_lot,
        seed=seed,
        seasons=_years(seasons),
        devices=_split(devices) or tuple(p.name for p in PHONE_PROFILES),
        regions=_split(regions) or DEFAULT_REGIONS,
        unreferenced_regions=DEFAULT_UNREFERENCED if unreferenced is None else _split(unreferenced) or (),
        fraud_rate=fraud_rate,
        intake_share=intake_share,
        fraud_kinds=_split(fraud_kinds),
        trays=_split(trays) or tuple(t.name for t in TRAYS),
        max_photo_side=max_side,
        with_card=not no_card,
    )
    with progress_bar(f"Rendering {lots} lots x {photos_per_lot} photos", lots) as progress:
        summary = simulate_world(config, out, progress, workers=workers, overwrite=overwrite)
    if as_json:
        print_json(
            {
                **asdict(summary),
                **{
                    name: str(getattr(summary, name))
                    for name in ("lots_csv", "claims_csv", "reference_csv", "intake_csv")
                },
            }
        )
        return
    table = Table(title=f"World written to {summary.out_dir} in {summary.seconds:.1f} s")
    table.add_column("claims")
    table.add_column("lots", justify="right")
    for kind, count in summary.fraud_counts.items():
        table.add_row(kind, str(count))
    console.print(table)
    console.print(
        f"{summary.lots} lots, {summary.photos} photos, {len(summary.lots_per_region)} départements, "
        f"seasons {', '.join(str(s) for s in summary.lots_per_season)}, {len(summary.devices)} phone profiles."
    )
    console.print(f"Truth: {summary.lots_csv}  Declarations: {summary.claims_csv}")
    console.print(f"Reference lots: {summary.reference_csv}  Intake (declarations to verify): {summary.intake_csv}")


#: The manifests a world holds (WorldSummary properties).
_MANIFESTS = ("lots_csv", "claims_csv", "reference_csv", "intake_csv")


@bench_app.command("simulate")
def bench_simulate(
    lots: int = typer.Option(24, "--lots", help="Lots rendered in each timed run."),
    photos_per_lot: int = typer.Option(3, "--photos-per-lot", help="Photos per lot."),
    no_card: bool = typer.Option(
        False, "--no-card", help="Leave the calibration card off every tray (photos taken without the protocol)."
    ),
    workers: int | None = typer.Option(None, "--workers", help="Processes of the parallel run (default: cores)."),
    seed: int = typer.Option(1, "--seed", help="World seed."),
    as_json: bool = json_option(),
) -> None:
    """Rendering speed (one process vs the pool, same world) and the world's signal-vs-nuisance sizes."""
    import shutil
    import tempfile
    from dataclasses import asdict

    from grainproof.geo import load_region_set
    from grainproof.simulate import DEFAULT_REGIONS, DEFAULT_SEASONS, NATURE_SEED, WorldConfig, simulate_world
    from grainproof.simulate.checks import latent_separation, phone_vs_neighbour_colour
    from grainproof.simulate.traits import Nature
    from grainproof.simulate.world import default_workers

    pool = workers or default_workers()
    config = WorldConfig(lots=lots, photos_per_lot=photos_per_lot, seed=seed)
    seconds: dict[int, float] = {}
    scratch = Path(tempfile.mkdtemp(prefix="grainproof-bench-simulate-"))
    try:
        for n_workers in (1, pool):
            with progress_bar(f"{lots} lots, {n_workers} process(es)", lots) as progress:
                summary = simulate_world(config, scratch / f"w{n_workers}", progress, workers=n_workers)
            seconds[n_workers] = summary.seconds
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    photos = lots * photos_per_lot
    regions = load_region_set("fr-departements")
    nature = Nature(NATURE_SEED)
    separation = latent_separation(regions, DEFAULT_REGIONS, nature, DEFAULT_SEASONS)
    pixels = phone_vs_neighbour_colour(regions, DEFAULT_REGIONS, nature)
    if as_json:
        print_json(
            {
                "lots": lots,
                "photos": photos,
                "seconds_by_processes": seconds,
                "speedup": seconds[1] / seconds[pool],
                "latent_separation": asdict(separation),
                "pixel_nuisance": asdict(pixels),
            }
        )
        return
    speed = Table(title=f"Rendering {lots} lots x {photos_per_lot} photos (seed {seed})")
    for column in ("run", "seconds", "photos/s", "ratio vs 1 process"):
        speed.add_column(column, justify="right")
    for n_workers, taken in seconds.items():
        speed.add_row(f"{n_workers} process(es)", f"{taken:.1f}", f"{photos / taken:.2f}", f"{seconds[1] / taken:.2f}x")
    console.print(speed)
    console.print(
        f"Projected 1,000 lots x 3 photos with {pool} process(es): {seconds[pool] / photos * 3000 / 60:.1f} min"
    )

    signal = Table(title="Signal and nuisance (default départements)")
    signal.add_column("measure")
    signal.add_column("value", justify="right")
    signal.add_row("latent: neighbouring départements, median (within-place SDs)", f"{separation.neighbour_median:.1f}")
    signal.add_row("latent: départements >= 300 km apart, median", f"{separation.far_median:.1f}")
    signal.add_row("latent: two seasons at one place, median", f"{separation.season_median:.1f}")
    signal.add_row("pixels: same lot, two phones, mean-colour distance median", f"{pixels.phone_median:.2f}")
    signal.add_row("pixels: same lot, two most similar phones", f"{pixels.phone_min:.2f}")
    signal.add_row("pixels: neighbouring départements, one phone, median", f"{pixels.neighbour_median:.2f}")
    signal.add_row("pixels: neighbouring départements, one phone, max", f"{pixels.neighbour_max:.2f}")
    signal.add_row("ratio: phone median / neighbour max", f"{pixels.phone_median / pixels.neighbour_max:.1f}x")
    console.print(signal)
