"""`grainproof bench reference`: build time and peak memory of reference models from 10k to 1M lots.

Each build runs in its own process (so its peak resident memory is its own) on synthetic vectors
written to a `.npy` file: the streaming builder reads them chunk by chunk. Baselines from the same
run: the same builder with every vector loaded in memory first (what holding the archive in RAM
costs), and a full rebuild for the incremental update of one day's lots.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from grainproof.errors import GrainproofError
from grainproof.progress import ProgressCallback

SPECIES = "soft_wheat"
VARIETIES = ("apache", "rubisko", "chevignon", "extase", "ku_ra")
SEASONS = (2023, 2024, 2025)
#: Origin units of the synthetic world (département-like codes); 90 x 3 seasons x 5 varieties = 1350 cells.
ORIGINS = tuple(f"{i:02d}" for i in range(1, 91))


@dataclass(frozen=True, slots=True, kw_only=True)
class SyntheticReference:
    """Where a synthetic reference archive was written: vectors (.npy, float32) and labels (.npz)."""

    vectors: Path
    table: Path
    lots: int
    dim: int


def write_synthetic_reference(
    directory: Path, *, lots: int, dim: int, seed: int, prefix: str = "ref", chunk: int = 65_536
) -> SyntheticReference:
    """Write `lots` genuine lots of a Gaussian cell world (variety + origin + season effects + noise).

    The cell effects depend on the seed only, so archives written with different `prefix`/`lots` but the
    same seed come from the same world (the day's new lots and the reference).
    """
    if lots < 2 or dim < 2:
        raise GrainproofError("A synthetic reference needs at least 2 lots and 2 dimensions.")
    directory.mkdir(parents=True, exist_ok=True)
    world = np.random.default_rng(seed)
    variety_means = world.normal(0.0, 3.0, (len(VARIETIES), dim))
    origin_effects = world.normal(0.0, 0.6, (len(ORIGINS), dim))
    season_effects = world.normal(0.0, 0.4, (len(SEASONS), dim))
    draws = np.random.default_rng([seed, lots, sum(prefix.encode())])
    vectors_path = directory / f"{prefix}_vectors.npy"
    out = np.lib.format.open_memmap(vectors_path, mode="w+", dtype=np.float32, shape=(lots, dim))
    v_all = draws.integers(len(VARIETIES), size=lots)
    o_all = draws.integers(len(ORIGINS), size=lots)
    s_all = draws.integers(len(SEASONS), size=lots)
    for start in range(0, lots, chunk):
        stop = min(start + chunk, lots)
        v, o, s = v_all[start:stop], o_all[start:stop], s_all[start:stop]
        noise = draws.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = variety_means[v] + origin_effects[o] + season_effects[s] + noise
    out.flush()
    del out
    table_path = directory / f"{prefix}_table.npz"
    width = len(str(lots))
    np.savez(
        table_path,
        lot_ids=np.asarray([f"{prefix}{i:0{width}d}" for i in range(lots)]),
        varieties=np.asarray(VARIETIES)[v_all],
        origins=np.asarray(ORIGINS)[o_all],
        seasons=np.asarray(SEASONS, dtype=np.int64)[s_all],
    )
    return SyntheticReference(vectors=vectors_path, table=table_path, lots=lots, dim=dim)


def _load_table(path: Path) -> Any:
    from grainproof.reference.vectors import ReferenceTable

    with np.load(path) as data:
        n = len(data["lot_ids"])
        return ReferenceTable(
            lot_ids=data["lot_ids"],
            species=np.full(n, SPECIES),
            varieties=data["varieties"],
            origins=data["origins"],
            seasons=data["seasons"],
            groups=data["lot_ids"],
            devices=np.full(n, ""),
        )


def _lot_records(archive: SyntheticReference) -> list[Any]:
    from grainproof.domain import Claim, LotRecord, Origin

    vectors = np.load(archive.vectors)
    with np.load(archive.table) as data:
        return [
            LotRecord(
                claim=Claim(
                    lot_id=str(lot_id),
                    species=SPECIES,
                    variety=str(variety),
                    origin=Origin(region=str(origin)),
                    harvest_date=date(int(season), 7, 15),
                ),
                features=tuple(vector.tolist()),
            )
            for lot_id, variety, origin, season, vector in zip(
                data["lot_ids"], data["varieties"], data["origins"], data["seasons"], vectors, strict=True
            )
        ]


def _peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def build_in_this_process(
    vectors: Path,
    table: Path,
    *,
    in_memory: bool,
    seed: int,
    update_vectors: Path | None = None,
    update_table: Path | None = None,
    save_to: Path | None = None,
) -> dict[str, Any]:
    """Build a model (streaming, or with every vector loaded first) and report its times and peak memory."""
    from grainproof.reference.model import fit_reference_arrays
    from grainproof.reference.vectors import InMemoryVectors, NpyVectors, VectorSource

    rss_start = _peak_rss_mib()
    start = time.perf_counter()
    labels = _load_table(table)
    source: VectorSource = InMemoryVectors(np.load(vectors).astype(np.float64)) if in_memory else NpyVectors(vectors)
    model = fit_reference_arrays(labels, source, seed=seed)
    build_s = time.perf_counter() - start
    result: dict[str, Any] = {
        "lots": len(labels),
        "build_s": build_s,
        "reduced_dim": next(iter(model.species.values())).dim,
        "cells": len(next(iter(model.species.values())).cell_keys),
    }
    if save_to is not None:
        start = time.perf_counter()
        model.save(save_to)
        result["save_s"] = time.perf_counter() - start
    result["peak_rss_mib"] = _peak_rss_mib()
    result["peak_rss_at_start_mib"] = rss_start
    if update_vectors is not None and update_table is not None:
        del labels, source
        day = _lot_records(SyntheticReference(vectors=update_vectors, table=update_table, lots=0, dim=model.dim))
        start = time.perf_counter()
        updated = model.update(day)
        result["update_s"] = time.perf_counter() - start
        result["update_lots"] = len(day)
        if save_to is not None:
            start = time.perf_counter()
            updated.save(save_to.with_name(save_to.name + "-updated"))
            result["update_save_s"] = time.perf_counter() - start
    return result


def _run_worker(args: list[str], *, threads: int) -> dict[str, Any]:
    """Run one build in a fresh interpreter so its peak memory is measured alone."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    completed = subprocess.run(
        [sys.executable, "-m", "grainproof.scale.reference_bench", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if completed.returncode != 0:
        raise GrainproofError(f"A benchmark build failed:\n{completed.stderr[-4000:]}")
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


@dataclass(slots=True, kw_only=True)
class ReferenceBench:
    """Figures of `grainproof bench reference` (also written as JSON)."""

    dim: int
    threads: int
    seed: int
    builds: list[dict[str, Any]] = field(default_factory=list)
    update: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_reference_bench(
    *,
    sizes: list[int],
    dim: int,
    update_lots: int,
    seed: int = 0,
    threads: int = 2,
    baseline_max_lots: int = 100_000,
    work_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> ReferenceBench:
    """Streaming build at each size against the all-in-memory build (up to `baseline_max_lots`), then the
    day's update of the largest model against a full rebuild with those lots."""
    if not sizes or min(sizes) < 100:
        raise GrainproofError("Give sizes of at least 100 lots, e.g. --sizes 10000,100000,1000000.")
    bench = ReferenceBench(dim=dim, threads=threads, seed=seed)
    sizes = sorted(sizes)
    steps = len(sizes) + sum(1 for s in sizes if s <= baseline_max_lots) + (2 if update_lots else 0)
    done = 0
    with tempfile.TemporaryDirectory(prefix="grainproof-bench-reference-", dir=work_dir) as scratch:
        root = Path(scratch)
        largest = sizes[-1]
        for size in sizes:
            archive = write_synthetic_reference(root / f"n{size}", lots=size, dim=dim, seed=seed)
            row: dict[str, Any] = {"lots": size}
            row["streaming"] = _run_worker(
                ["--vectors", str(archive.vectors), "--table", str(archive.table), "--seed", str(seed)],
                threads=threads,
            )
            done += 1
            if progress:
                progress(done, steps)
            row["raw_vectors_float64_mib"] = size * dim * 8 / 2**20
            if size <= baseline_max_lots:
                row["in_memory"] = _run_worker(
                    [
                        "--vectors",
                        str(archive.vectors),
                        "--table",
                        str(archive.table),
                        "--seed",
                        str(seed),
                        "--in-memory",
                    ],
                    threads=threads,
                )
                done += 1
                if progress:
                    progress(done, steps)
            bench.builds.append(row)
            if size != largest:
                archive.vectors.unlink()
        if update_lots:
            base = SyntheticReference(
                vectors=root / f"n{largest}" / "ref_vectors.npy",
                table=root / f"n{largest}" / "ref_table.npz",
                lots=largest,
                dim=dim,
            )
            day = write_synthetic_reference(root / "day", lots=update_lots, dim=dim, seed=seed, prefix="day")
            updated = _run_worker(
                [
                    "--vectors",
                    str(base.vectors),
                    "--table",
                    str(base.table),
                    "--seed",
                    str(seed),
                    "--update-vectors",
                    str(day.vectors),
                    "--update-table",
                    str(day.table),
                    "--save-to",
                    str(root / "model"),
                ],
                threads=threads,
            )
            done += 1
            if progress:
                progress(done, steps)
            combined = _concatenate(base, day, root / "combined")
            base.vectors.unlink()
            rebuilt = _run_worker(
                [
                    "--vectors",
                    str(combined.vectors),
                    "--table",
                    str(combined.table),
                    "--seed",
                    str(seed),
                    "--save-to",
                    str(root / "rebuilt"),
                ],
                threads=threads,
            )
            done += 1
            if progress:
                progress(done, steps)
            bench.update = {
                "base_lots": largest,
                "new_lots": update_lots,
                "update_s": updated["update_s"],
                "update_and_save_s": updated["update_s"] + updated.get("update_save_s", 0.0),
                "rebuild_s": rebuilt["build_s"],
                "rebuild_and_save_s": rebuilt["build_s"] + rebuilt.get("save_s", 0.0),
                "peak_rss_mib": updated["peak_rss_mib"],
            }
    return bench


_TABLE_KEYS = ("lot_ids", "varieties", "origins", "seasons")


def _concatenate(base: SyntheticReference, day: SyntheticReference, directory: Path) -> SyntheticReference:
    """The reference plus the day's lots as one archive (the full-rebuild baseline), written chunk by chunk."""
    directory.mkdir(parents=True, exist_ok=True)
    lots = base.lots + day.lots
    path = directory / "combined_vectors.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(lots, base.dim))
    position = 0
    for part in (base.vectors, day.vectors):
        source = np.load(part, mmap_mode="r")
        for start in range(0, len(source), 65_536):
            block = np.asarray(source[start : start + 65_536])
            out[position : position + len(block)] = block
            position += len(block)
        del source
    out.flush()
    del out
    with np.load(base.table) as first, np.load(day.table) as second:
        combined = {key: np.concatenate([first[key], second[key]]) for key in _TABLE_KEYS}
    np.savez(directory / "combined_table.npz", **combined)  # type: ignore[arg-type]
    return SyntheticReference(vectors=path, table=directory / "combined_table.npz", lots=lots, dim=base.dim)


def _main(argv: list[str]) -> None:
    """Worker entry: one build, its figures as one JSON line on stdout."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m grainproof.scale.reference_bench")
    parser.add_argument("--vectors", type=Path, required=True)
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-memory", action="store_true")
    parser.add_argument("--update-vectors", type=Path)
    parser.add_argument("--update-table", type=Path)
    parser.add_argument("--save-to", type=Path)
    args = parser.parse_args(argv)
    result = build_in_this_process(
        args.vectors,
        args.table,
        in_memory=args.in_memory,
        seed=args.seed,
        update_vectors=args.update_vectors,
        update_table=args.update_table,
        save_to=args.save_to,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
