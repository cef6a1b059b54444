"""`grainproof bench verify` (the service under load) and `grainproof bench reference` (builds at scale)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from grainproof.cli import bench_app
from grainproof.cli._output import json_option, json_out_option, print_json, write_json
from grainproof.errors import GrainproofError
from grainproof.progress import console, progress_bar


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise GrainproofError(f"{option} must be comma-separated whole numbers, e.g. 10000,100000.") from None
    if not values or min(values) < 1:
        raise GrainproofError(f"{option} needs at least one positive number.")
    return values


@bench_app.command("reference")
def bench_reference_command(
    sizes: str = typer.Option("10000,100000,1000000", help="Reference lots per build, comma-separated."),
    dim: int = typer.Option(256, help="Embedding dimension of the synthetic vectors."),
    update_lots: int = typer.Option(10_000, help="One day's new lots added to the largest model (0: skip)."),
    baseline_max_lots: int = typer.Option(100_000, help="Largest size also built with every vector in memory."),
    threads: int = typer.Option(2, help="BLAS threads of each build process."),
    seed: int = typer.Option(0),
    work_dir: Path | None = typer.Option(None, help="Scratch directory for the synthetic archives (default: /tmp)."),
    json_out: Path | None = json_out_option(),
    as_json: bool = json_option(),
) -> None:
    """Build time and peak memory from 10k to 1M lots (streaming vs all in memory), and a day's update vs rebuild."""
    from grainproof.scale.reference_bench import run_reference_bench

    size_list = _int_list(sizes, "--sizes")
    with progress_bar("building reference models") as progress:
        result = run_reference_bench(
            sizes=size_list,
            dim=dim,
            update_lots=update_lots,
            seed=seed,
            threads=threads,
            baseline_max_lots=baseline_max_lots,
            work_dir=work_dir,
            progress=progress,
        )
    write_json(json_out, result.as_dict())
    if as_json:
        print_json(result.as_dict())
        return
    table = Table(title=f"bench reference: synthetic lots, d={dim}, {threads} BLAS threads per build")
    for column in (
        "lots",
        "build s",
        "s per 10k lots",
        "peak MiB",
        "all-in-memory build s",
        "all-in-memory MiB",
        "raw vectors (float64) MiB",
    ):
        table.add_column(column, justify="right")
    for row in result.builds:
        streaming, in_memory = row["streaming"], row.get("in_memory")
        table.add_row(
            f"{row['lots']:,}",
            f"{streaming['build_s']:.1f}",
            f"{streaming['build_s'] / row['lots'] * 10_000:.2f}",
            f"{streaming['peak_rss_mib']:.0f}",
            f"{in_memory['build_s']:.1f}" if in_memory else "-",
            f"{in_memory['peak_rss_mib']:.0f}" if in_memory else "-",
            f"{row['raw_vectors_float64_mib']:.0f}",
        )
    console.print(table)
    for small, large in zip(result.builds, result.builds[1:], strict=False):
        growth = large["streaming"]["build_s"] / small["streaming"]["build_s"]
        console.print(
            f"{small['lots']:,} -> {large['lots']:,} lots ({large['lots'] / small['lots']:.0f}x): "
            f"build time x{growth:.1f}, peak memory x"
            f"{large['streaming']['peak_rss_mib'] / small['streaming']['peak_rss_mib']:.1f}"
        )
    if result.update:
        update = result.update
        console.print(
            f"update: +{update['new_lots']:,} lots on {update['base_lots']:,}: {update['update_s']:.2f} s "
            f"({update['update_and_save_s']:.2f} s with saving) vs full rebuild {update['rebuild_s']:.1f} s "
            f"({update['rebuild_and_save_s']:.1f} s with saving): ratio {update['update_s'] / update['rebuild_s']:.3f}"
        )


@bench_app.command("verify")
def bench_verify_command(
    concurrency: str = typer.Option("1,8,32", help="Concurrent clients, comma-separated."),
    seconds: float = typer.Option(8.0, help="Duration of each vectors / health measurement."),
    photo_seconds: float = typer.Option(20.0, help="Duration of each photo measurement (embedding is slower)."),
    max_requests: int = typer.Option(2000, help="At most this many requests per measurement."),
    workers: int = typer.Option(2, help="Worker processes of the service."),
    server: str = typer.Option("grainproof", help="grainproof (`serve --workers`) or uvicorn (`uvicorn --workers`)."),
    reference_lots: int = typer.Option(2000, help="Reference lots of the model the claims are scored against."),
    photos: bool = typer.Option(True, "--photos/--no-photos", help="Also measure verifications with 3 photos."),
    database_url: str | None = typer.Option(
        None, help="Run the service on this database (e.g. postgresql+psycopg://...); default: SQLite in a temp dir."
    ),
    seed: int = typer.Option(0),
    json_out: Path | None = json_out_option(),
    as_json: bool = json_option(),
) -> None:
    """p50/p99 latency and throughput of POST /v1/verifications (vectors, 3 photos) vs /health, same server and load."""
    from grainproof.scale.verify_bench import run_verify_bench

    levels = _int_list(concurrency, "--concurrency")
    with progress_bar("loading the service") as progress:
        result = run_verify_bench(
            concurrencies=levels,
            duration_s=seconds,
            photo_duration_s=photo_seconds,
            max_requests=max_requests,
            workers=workers,
            reference_lots=reference_lots,
            with_photos=photos,
            database_url=database_url,
            server=server,
            seed=seed,
            progress=progress,
        )
    write_json(json_out, result.as_dict())
    if as_json:
        print_json(result.as_dict())
        return
    table = Table(
        title=f"bench verify: {result.server} server, {result.workers} workers, {result.database}, "
        f"{result.cpu_count} CPUs, {result.reference_lots} reference lots, d={result.dim}"
    )
    for column in (
        "endpoint",
        "clients",
        "requests",
        "errors",
        "p50 ms",
        "p99 ms",
        "req/s",
        "p50 / health",
        "p99 / health",
    ):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    ratios = {(r["endpoint"], r["concurrency"]): r for r in result.ratios()}
    for row in result.results:
        ratio = ratios.get((row.endpoint, row.concurrency))
        table.add_row(
            "GET /health (baseline)" if row.endpoint == "health" else f"POST /v1/verifications ({row.endpoint})",
            str(row.concurrency),
            str(row.requests),
            str(row.errors),
            f"{row.p50_ms:.1f}",
            f"{row.p99_ms:.1f}",
            f"{row.throughput_per_s:.1f}",
            f"{ratio['p50_ratio']:.1f}" if ratio else "1",
            f"{ratio['p99_ratio']:.1f}" if ratio else "1",
        )
    console.print(table)
