"""`simulate_world`: lots, fields, claims and photos of a synthetic grain world, written to a folder.

The main process draws everything that needs geography (fields inside départements, declared
origins) and every lot's latent traits from one world random stream; worker processes then only
render photos, each from its lot's own seed. The output is therefore identical for any number
of workers: same seed, byte-identical CSVs and photos.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grainproof.domain import FRAUD_KINDS, Claim, LotRecord, Origin
from grainproof.errors import ClaimError, GrainproofError
from grainproof.manifest import write_manifest
from grainproof.progress import ProgressCallback
from grainproof.simulate import traits as trait_model
from grainproof.simulate.devices import PHONE_PROFILES, sample_lighting
from grainproof.simulate.photos import MAX_KERNELS, MIN_KERNELS, LotPhotoJob, photograph_lot
from grainproof.simulate.render import TRAYS
from grainproof.simulate.varieties import SPECIES, VARIETIES, varieties_of

if TYPE_CHECKING:
    from grainproof.geo import RegionSet

#: Cereal départements that make up the reference (Paris basin, Centre, Nord, Burgundy, West, South-West).
DEFAULT_REGIONS: tuple[str, ...] = (
    "02", "10", "17", "18", "21", "27", "28", "31", "32", "36",
    "45", "51", "59", "60", "62", "76", "77", "80", "86", "89",
)  # fmt: skip
#: Cereal départements deliberately kept out of the reference, each bordering referenced ones
#: (Ardennes, Loir-et-Cher, Deux-Sèvres): lots grown there test "origin missing from the reference".
DEFAULT_UNREFERENCED: tuple[str, ...] = ("08", "41", "79")
DEFAULT_SEASONS: tuple[int, ...] = (2023, 2024, 2025)
#: Fixed seed of "nature" (provenance field, département offsets, season weather): shared by all worlds.
NATURE_SEED = 2024
#: Share of soft wheat among lots (the rest is barley), roughly France's cereal acreage ratio.
SOFT_WHEAT_SHARE = 0.55
#: Far-origin claims name a referenced département at least this far from the true one.
FAR_ORIGIN_MIN_KM = 300.0
#: Admixed kernels come from a referenced département at least this far away.
ADMIXTURE_MIN_KM = 150.0
ADMIXTURE_SHARE_RANGE = (0.2, 0.5)
#: Share of the kernels of another variety of the same species in a variety admixture (a lot cut with a cheaper one).
VARIETY_ADMIXTURE_SHARE_RANGE = (0.2, 0.5)
FALSE_CLAIM_KINDS: tuple[str, ...] = tuple(kind for kind in FRAUD_KINDS if kind != "genuine")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorldConfig:
    """What world to simulate; checks its own values (geography is checked against the region set later)."""

    lots: int
    photos_per_lot: int = 3
    seed: int = 0
    seasons: tuple[int, ...] = DEFAULT_SEASONS
    devices: tuple[str, ...] = tuple(p.name for p in PHONE_PROFILES)
    regions: tuple[str, ...] = DEFAULT_REGIONS
    unreferenced_regions: tuple[str, ...] = DEFAULT_UNREFERENCED
    fraud_rate: float = 0.3
    #: Share of the fields whose lots arrive as the day's intake (intake.csv) rather than as reference lots
    #: (reference.csv); lots of unreferenced regions are always intake.
    intake_share: float = 0.2
    #: False-claim kinds to inject; None: every kind the world allows (wrong_season needs 2+ seasons,
    #: missing_origin needs unreferenced regions).
    fraud_kinds: tuple[str, ...] | None = None
    trays: tuple[str, ...] = tuple(t.name for t in TRAYS)
    species: tuple[str, ...] = SPECIES
    lots_per_field: float = 3.0
    max_photo_side: int | None = None
    #: False: the calibration card is left off every tray (old photos, another intake protocol).
    with_card: bool = True
    nature_seed: int = NATURE_SEED
    region_set: str = "fr-departements"

    def __post_init__(self) -> None:
        if self.lots < 1:
            raise GrainproofError(f"--lots must be at least 1 (got {self.lots}).")
        if not 0.0 < self.intake_share < 1.0:
            raise GrainproofError(f"--intake-share must lie strictly between 0 and 1 (got {self.intake_share}).")
        if not 1 <= self.photos_per_lot <= 20:
            raise GrainproofError(f"--photos-per-lot must lie in 1..20 (got {self.photos_per_lot}).")
        if not self.seasons:
            raise GrainproofError("Give at least one season (harvest year) with --seasons.")
        this_year = date.today().year
        for season in self.seasons:
            if not 1950 <= season <= this_year - (1 if date.today() < date(this_year, 9, 1) else 0):
                raise GrainproofError(
                    f"Season {season} is not a past harvest year; give years from 1950 to the last harvest."
                )
        if len(set(self.seasons)) != len(self.seasons):
            raise GrainproofError("--seasons lists a year twice.")
        known_phones = {p.name for p in PHONE_PROFILES}
        unknown = [d for d in self.devices if d not in known_phones]
        if unknown or not self.devices:
            raise GrainproofError(
                f"Unknown phone profile(s) {', '.join(unknown) or '(none given)'}; "
                f"known profiles: {', '.join(sorted(known_phones))}."
            )
        known_trays = {t.name for t in TRAYS}
        if not self.trays or any(t not in known_trays for t in self.trays):
            raise GrainproofError(f"Unknown tray; known trays: {', '.join(sorted(known_trays))}.")
        for species in self.species:
            varieties_of(species)  # raises a sentence naming the known species
        if not self.species:
            raise GrainproofError("Give at least one species.")
        if not self.regions:
            raise GrainproofError("Give at least one referenced region with --regions.")
        overlap = set(self.regions) & set(self.unreferenced_regions)
        if overlap:
            raise GrainproofError(
                f"Region(s) {', '.join(sorted(overlap))} are both referenced and unreferenced; list each in one flag."
            )
        if not 0.0 <= self.fraud_rate <= 1.0:
            raise GrainproofError(f"--fraud-rate must lie in [0, 1] (got {self.fraud_rate}).")
        if self.fraud_kinds is not None:
            bad = [k for k in self.fraud_kinds if k not in FALSE_CLAIM_KINDS]
            if bad:
                raise GrainproofError(
                    f"Unknown fraud kind(s) {', '.join(bad)}; choose from {', '.join(FALSE_CLAIM_KINDS)}."
                )
            if "wrong_season" in self.fraud_kinds and len(self.seasons) < 2:
                raise GrainproofError("wrong_season claims need at least two seasons; add years to --seasons.")
            needs_two = {"neighbour_origin", "far_origin", "admixture"} & set(self.fraud_kinds)
            if needs_two and len(set(self.regions)) < 2:
                raise GrainproofError(
                    f"{', '.join(sorted(needs_two))} claims need two or more referenced regions; add some to --regions."
                )
            if "missing_origin" in self.fraud_kinds and not self.unreferenced_regions:
                raise GrainproofError("missing_origin claims need unreferenced regions (--unreferenced).")
            if self.fraud_rate > 0 and not self.fraud_kinds:
                raise GrainproofError("A positive --fraud-rate needs at least one fraud kind.")
        if self.lots_per_field < 1:
            raise GrainproofError("lots_per_field must be at least 1.")
        if self.max_photo_side is not None and not 64 <= self.max_photo_side <= 4096:
            raise GrainproofError(f"--max-side must lie in 64..4096 pixels (got {self.max_photo_side}).")

    @property
    def active_fraud_kinds(self) -> tuple[str, ...]:
        """The false-claim kinds this world injects."""
        if self.fraud_kinds is not None:
            return self.fraud_kinds
        kinds = list(FALSE_CLAIM_KINDS)
        if len(self.seasons) < 2:
            kinds.remove("wrong_season")
        if not self.unreferenced_regions:
            kinds.remove("missing_origin")
        if len(set(self.regions)) < 2:
            for kind in ("neighbour_origin", "far_origin", "admixture"):
                kinds.remove(kind)
        return tuple(kinds)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorldSummary:
    """What simulate_world wrote: counts to print and the paths of the files."""

    out_dir: Path
    lots: int
    photos: int
    fraud_counts: dict[str, int]
    lots_per_region: dict[str, int]
    lots_per_season: dict[int, int]
    lots_per_variety: dict[str, int]
    devices: tuple[str, ...]
    seconds: float = field(compare=False)

    @property
    def lots_csv(self) -> Path:
        return self.out_dir / "lots.csv"

    @property
    def claims_csv(self) -> Path:
        return self.out_dir / "claims.csv"

    @property
    def reference_csv(self) -> Path:
        return self.out_dir / "reference.csv"

    @property
    def intake_csv(self) -> Path:
        return self.out_dir / "intake.csv"


@dataclass(slots=True)
class _Lots:
    """Per-lot columns drawn in the main process (parallel arrays, one entry per lot)."""

    ids: list[str]
    kinds: list[str]
    regions: list[str]
    field_ids: list[str]
    lon: np.ndarray
    lat: np.ndarray
    seasons: np.ndarray
    species: list[str]
    varieties: list[str]
    devices: list[str]
    trays: list[str]
    traits: np.ndarray
    harvest: list[date]


def _resolve_regions(region_set: RegionSet, codes: Sequence[str], flag: str) -> tuple[str, ...]:
    try:
        return tuple(region_set.resolve_code(code) for code in codes)
    except ClaimError as exc:
        raise GrainproofError(f"{flag}: {exc}") from None


def _fraud_kinds(config: WorldConfig, rng: np.random.Generator) -> list[str]:
    """Exact share of false claims, kinds in equal turns, shuffled over lots."""
    kinds = config.active_fraud_kinds
    n_false = round(config.fraud_rate * config.lots) if kinds else 0
    labels = [kinds[i % len(kinds)] for i in range(n_false)] + ["genuine"] * (config.lots - n_false)
    return [labels[i] for i in rng.permutation(config.lots)]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _draw_lots(
    config: WorldConfig, region_set: RegionSet, nature: trait_model.Nature, rng: np.random.Generator
) -> _Lots:
    """Where, when and what each lot is, and its latent traits."""
    n = config.lots
    kinds = _fraud_kinds(config, rng)
    regions = [
        _pick(rng, config.unreferenced_regions if kind == "missing_origin" else config.regions) for kind in kinds
    ]
    # Fields: each département gets enough fields for ~lots_per_field lots each; lots pick a field at random.
    field_points: dict[str, np.ndarray] = {}
    field_shift: dict[str, np.ndarray] = {}
    counts = Counter(regions)
    for code in sorted(counts):
        n_fields = max(1, int(np.ceil(counts[code] / config.lots_per_field)))
        field_points[code] = np.round(region_set.sample_points(code, n_fields, rng), 6)
        field_shift[code] = trait_model.field_effects(rng, n_fields)
    field_index = np.array([int(rng.integers(len(field_points[code]))) for code in regions])
    # Field ids carry the world seed, like lot ids, so merged worlds never share a field by accident.
    field_ids = [f"W{config.seed}-F{code}-{i + 1:03d}" for code, i in zip(regions, field_index, strict=True)]
    points = np.array([field_points[code][i] for code, i in zip(regions, field_index, strict=True)])
    seasons = np.array([config.seasons[int(rng.integers(len(config.seasons)))] for _ in range(n)])
    species = [str(s) for s in rng.choice(sorted(config.species), size=n, p=_species_shares(config.species))]
    varieties = []
    for sp in species:
        options = varieties_of(sp)
        weights = np.array([v.popularity for v in options])
        varieties.append(options[int(rng.choice(len(options), p=weights / weights.sum()))].name)
    z = nature.environment(points[:, 0], points[:, 1], regions, seasons)
    z += np.array([field_shift[code][i] for code, i in zip(regions, field_index, strict=True)])
    z += trait_model.lot_effects(rng, n)
    by_name = {(v.species, v.name): v for v in VARIETIES}
    traits = np.array(
        [
            trait_model.traits_from_latent(by_name[(s, v)], z[i])
            for i, (s, v) in enumerate(zip(species, varieties, strict=True))
        ]
    )
    timing = np.array([nature.season_timing_days(int(s)) for s in seasons])
    days = trait_model.harvest_day_of_year(np.array(species), points[:, 1], timing, rng)
    harvest = [date(int(s), 1, 1) + timedelta(days=int(d) - 1) for s, d in zip(seasons, days, strict=True)]
    return _Lots(
        ids=[f"W{config.seed}-{i + 1:05d}" for i in range(n)],
        kinds=kinds,
        regions=regions,
        field_ids=field_ids,
        lon=points[:, 0],
        lat=points[:, 1],
        seasons=seasons,
        species=species,
        varieties=varieties,
        devices=[_pick(rng, config.devices) for _ in range(n)],
        trays=[_pick(rng, config.trays) for _ in range(n)],
        traits=traits,
        harvest=harvest,
    )


def _species_shares(species: Sequence[str]) -> np.ndarray:
    shares = np.array([SOFT_WHEAT_SHARE if s == "soft_wheat" else 1 - SOFT_WHEAT_SHARE for s in sorted(species)])
    return shares / shares.sum()


@dataclass(frozen=True, slots=True)
class _Declaration:
    region: str
    lon: float
    lat: float
    harvest: date
    admixture_region: str = ""
    admixture_share: float = 0.0
    admixture_traits: np.ndarray | None = None
    #: The declared variety when it is not the lot's own (variety_swap); "" otherwise.
    variety: str = ""
    #: The variety of the admixed kernels when they are of another variety (variety_admixture); "" otherwise.
    admixture_variety: str = ""


def _nearest(region_set: RegionSet, code: str, candidates: Sequence[str], *, exclude: str) -> str:
    options = [c for c in candidates if c != exclude]
    return min(options, key=lambda c: (region_set.distance_km(code, c), c))


def _declare(
    config: WorldConfig,
    lots: _Lots,
    region_set: RegionSet,
    nature: trait_model.Nature,
    rng: np.random.Generator,
) -> list[_Declaration]:
    """Each lot's declaration: the truth for genuine claims, a lie of the lot's fraud kind otherwise."""
    declarations = []
    referenced = list(config.regions)
    by_name = {(v.species, v.name): v for v in VARIETIES}
    for i, kind in enumerate(lots.kinds):
        truth = lots.regions[i]
        declared = _Declaration(truth, float(lots.lon[i]), float(lots.lat[i]), lots.harvest[i])
        if kind in ("neighbour_origin", "missing_origin"):
            adjacent = [c for c in region_set.neighbours(truth) if c in referenced and c != truth]
            target = _pick(rng, adjacent) if adjacent else _nearest(region_set, truth, referenced, exclude=truth)
            declared = _moved(declared, region_set, target, rng)
        elif kind == "far_origin":
            far = [c for c in referenced if region_set.distance_km(truth, c) >= FAR_ORIGIN_MIN_KM]
            others = [c for c in referenced if c != truth]
            target = _pick(rng, far) if far else max(others, key=lambda c: (region_set.distance_km(truth, c), c))
            declared = _moved(declared, region_set, target, rng)
        elif kind == "wrong_season":
            other = [s for s in config.seasons if s != int(lots.seasons[i])]
            year = other[int(rng.integers(len(other)))]
            declared = _Declaration(declared.region, declared.lon, declared.lat, declared.harvest.replace(year=year))
        elif kind == "admixture":
            sources = [c for c in referenced if c != truth and region_set.distance_km(truth, c) >= ADMIXTURE_MIN_KM]
            source = _pick(rng, sources or [c for c in referenced if c != truth])
            point = region_set.sample_points(source, 1, rng)
            z = nature.environment(point[:, 0], point[:, 1], [source], lots.seasons[i : i + 1])[0]
            z += trait_model.field_effects(rng, 1)[0] + trait_model.lot_effects(rng, 1)[0]
            other_traits = trait_model.traits_from_latent(by_name[(lots.species[i], lots.varieties[i])], z)
            share = round(float(rng.uniform(*ADMIXTURE_SHARE_RANGE)), 3)
            declared = _Declaration(
                declared.region, declared.lon, declared.lat, declared.harvest, source, share, other_traits
            )
        elif kind == "variety_swap":
            # A lot of one variety declared as another variety of its species, its origin and season true.
            swapped = _other_variety(lots.species[i], lots.varieties[i], rng)
            declared = _Declaration(declared.region, declared.lon, declared.lat, declared.harvest, variety=swapped)
        elif kind == "variety_admixture":
            # Kernels of another variety grown nearby the same season (another field of the same département).
            cut_with = _other_variety(lots.species[i], lots.varieties[i], rng)
            point = np.array([[lots.lon[i], lots.lat[i]]])
            z = nature.environment(point[:, 0], point[:, 1], [truth], lots.seasons[i : i + 1])[0]
            z += trait_model.field_effects(rng, 1)[0] + trait_model.lot_effects(rng, 1)[0]
            other_traits = trait_model.traits_from_latent(by_name[(lots.species[i], cut_with)], z)
            share = round(float(rng.uniform(*VARIETY_ADMIXTURE_SHARE_RANGE)), 3)
            declared = _Declaration(
                declared.region,
                declared.lon,
                declared.lat,
                declared.harvest,
                admixture_share=share,
                admixture_traits=other_traits,
                admixture_variety=cut_with,
            )
        declarations.append(declared)
    return declarations


def _other_variety(species: str, variety: str, rng: np.random.Generator) -> str:
    """Another variety of the species, by market share (a swap or a cut uses what is on the market)."""
    options = [v for v in varieties_of(species) if v.name != variety]
    weights = np.array([v.popularity for v in options])
    return options[int(rng.choice(len(options), p=weights / weights.sum()))].name


def _moved(declared: _Declaration, region_set: RegionSet, target: str, rng: np.random.Generator) -> _Declaration:
    """The same declaration with its origin moved to a random field point in another département."""
    lon, lat = np.round(region_set.sample_points(target, 1, rng)[0], 6)
    return _Declaration(target, float(lon), float(lat), declared.harvest)


def _records(
    config: WorldConfig, lots: _Lots, declarations: list[_Declaration], photo_names: list[tuple[str, ...]]
) -> tuple[list[LotRecord], list[LotRecord]]:
    truth, claims = [], []
    unreferenced = set(config.unreferenced_regions)
    for i, lot_id in enumerate(lots.ids):
        declared = declarations[i]
        truth.append(
            LotRecord(
                claim=Claim(
                    lot_id=lot_id,
                    species=lots.species[i],
                    variety=lots.varieties[i],
                    origin=Origin(lon=float(lots.lon[i]), lat=float(lots.lat[i]), region=lots.regions[i]),
                    harvest_date=lots.harvest[i],
                ),
                device=lots.devices[i],
                photos=photo_names[i],
                extra={
                    "season": str(int(lots.seasons[i])),
                    "referenced": "false" if lots.regions[i] in unreferenced else "true",
                    "admixture_share": repr(declared.admixture_share),
                    "admixture_region": declared.admixture_region,
                    "admixture_variety": declared.admixture_variety,
                    "field_id": lots.field_ids[i],
                },
            )
        )
        claims.append(
            LotRecord(
                claim=Claim(
                    lot_id=lot_id,
                    species=lots.species[i],
                    variety=declared.variety or lots.varieties[i],
                    origin=Origin(lon=declared.lon, lat=declared.lat, region=declared.region),
                    harvest_date=declared.harvest,
                ),
                device=lots.devices[i],
                photos=photo_names[i],
                extra={"fraud_kind": lots.kinds[i]},
            )
        )
    return truth, claims


def split_reference_and_intake(
    truth: list[LotRecord], claims: list[LotRecord], intake_share: float, seed: int
) -> tuple[list[LotRecord], list[LotRecord]]:
    """Reference lots (the truth of referenced lots) and the day's intake (the declarations of the others),
    sharing no lot and no field: whole fields go one way, by a seeded hash, and every lot of an unreferenced
    region is intake (the reference is not meant to know it), and so is every field holding a lot cut with
    another variety. So the batch flow never scores a lot against itself or its field mates."""
    reference, intake = [], []
    # A lot cut with another variety is no reference for its declared one: its whole field arrives as intake.
    cut_fields = {lot.extra.get("field_id") or lot.lot_id for lot in truth if lot.extra.get("admixture_variety")}
    for lot, claim in zip(truth, claims, strict=True):
        field_id = lot.extra.get("field_id") or lot.lot_id
        draw = int.from_bytes(hashlib.sha256(f"{seed}:intake:{field_id}".encode()).digest()[:8], "big") / 2**64
        if lot.extra.get("referenced") == "false" or field_id in cut_fields or draw < intake_share:
            intake.append(claim)
        else:
            reference.append(lot)
    return reference, intake


def _write_latent_traits(path: Path, lots: _Lots) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["lot_id", *trait_model.LATENT_TRAITS])
        for lot_id, row in zip(lots.ids, lots.traits, strict=True):
            writer.writerow([lot_id, *(repr(round(float(v), 8)) for v in row)])


def _world_json(config: WorldConfig, lots: _Lots) -> dict[str, Any]:
    """The config and every model parameter, so a world can be understood (and regenerated) from its folder."""
    return {
        "config": {**asdict(config), "active_fraud_kinds": list(config.active_fraud_kinds)},
        "parameters": {
            "latent_traits": list(trait_model.LATENT_TRAITS),
            "share_base_logit": trait_model.SHARE_BASE_LOGIT.tolist(),
            "provenance_sd": trait_model.PROVENANCE_SD.tolist(),
            "provenance_length_km": trait_model.PROVENANCE_LENGTH_KM,
            "departement_share": trait_model.DEPARTEMENT_SHARE,
            "season_global_sd": trait_model.SEASON_GLOBAL_SD.tolist(),
            "season_field_sd": trait_model.SEASON_FIELD_SD.tolist(),
            "season_length_km": trait_model.SEASON_LENGTH_KM,
            "field_share": trait_model.FIELD_SHARE,
            "lot_share": trait_model.LOT_SHARE,
            "far_origin_min_km": FAR_ORIGIN_MIN_KM,
            "admixture_min_km": ADMIXTURE_MIN_KM,
            "admixture_share_range": list(ADMIXTURE_SHARE_RANGE),
            "variety_admixture_share_range": list(VARIETY_ADMIXTURE_SHARE_RANGE),
            "kernels_per_photo": [MIN_KERNELS, MAX_KERNELS],
            "soft_wheat_share": SOFT_WHEAT_SHARE,
            "varieties": [asdict(v) for v in VARIETIES],
            "phone_profiles": [asdict(p) for p in PHONE_PROFILES if p.name in config.devices],
            "trays": [asdict(t) for t in TRAYS if t.name in config.trays],
        },
        "counts": {
            "lots": len(lots.ids),
            "fraud_kinds": dict(sorted(Counter(lots.kinds).items())),
            "regions": dict(sorted(Counter(lots.regions).items())),
        },
    }


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Create out_dir/photos; an existing world is replaced only with overwrite, anything else never."""
    photos = out_dir / "photos"
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise GrainproofError(
                f"{out_dir} is not empty; choose another --out folder or pass --overwrite to replace the world in it."
            )
        if not (out_dir / "world.json").is_file():
            raise GrainproofError(
                f"{out_dir} is not empty and holds no world.json: refusing to overwrite a folder "
                "that is not a simulated world. Choose another --out folder."
            )
        shutil.rmtree(photos, ignore_errors=True)
        for name in ("lots.csv", "claims.csv", "reference.csv", "intake.csv", "latent_traits.csv", "world.json"):
            (out_dir / name).unlink(missing_ok=True)
    photos.mkdir(parents=True, exist_ok=True)


def default_workers() -> int:
    """Worker processes for rendering: the cores this process may use, at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def simulate_world(
    config: WorldConfig,
    out_dir: Path,
    progress: ProgressCallback | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
) -> WorldSummary:
    """Simulate a world and write photos/, lots.csv, claims.csv, latent_traits.csv and world.json into out_dir."""
    from grainproof.geo import load_region_set

    started = time.perf_counter()
    out_dir = Path(out_dir)
    region_set = load_region_set(config.region_set)
    regions = _resolve_regions(region_set, config.regions, "--regions")
    unreferenced = _resolve_regions(region_set, config.unreferenced_regions, "--unreferenced")
    config = _with_regions(config, regions, unreferenced)
    _prepare_out_dir(out_dir, overwrite)

    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x5EED]))
    nature = trait_model.Nature(config.nature_seed)
    lots = _draw_lots(config, region_set, nature, rng)
    declarations = _declare(config, lots, region_set, nature, rng)
    lighting = [sample_lighting(rng) for _ in lots.ids]
    kernel_counts = rng.integers(MIN_KERNELS, MAX_KERNELS + 1, size=config.lots)

    photo_names = [tuple(f"photos/{lot_id}_{k + 1}.jpg" for k in range(config.photos_per_lot)) for lot_id in lots.ids]
    jobs = [
        LotPhotoJob(
            seed=config.seed,
            lot_index=i,
            species=lots.species[i],
            variety=lots.varieties[i],
            traits=tuple(float(v) for v in lots.traits[i]),
            phone=lots.devices[i],
            tray=lots.trays[i],
            lighting=lighting[i],
            n_kernels=int(kernel_counts[i]),
            paths=tuple(out_dir / name for name in photo_names[i]),
            max_side=config.max_photo_side,
            admixture_traits=None
            if declarations[i].admixture_traits is None
            else tuple(float(v) for v in np.asarray(declarations[i].admixture_traits)),
            admixture_share=declarations[i].admixture_share,
            admixture_variety=declarations[i].admixture_variety or None,
            with_card=config.with_card,
        )
        for i in range(config.lots)
    ]
    _render_all(jobs, workers or default_workers(), progress)

    truth, claims = _records(config, lots, declarations, photo_names)
    write_manifest(out_dir / "lots.csv", truth)
    write_manifest(out_dir / "claims.csv", claims)
    reference, intake = split_reference_and_intake(truth, claims, config.intake_share, config.seed)
    write_manifest(out_dir / "reference.csv", reference)
    write_manifest(out_dir / "intake.csv", intake)
    _write_latent_traits(out_dir / "latent_traits.csv", lots)
    (out_dir / "world.json").write_text(json.dumps(_world_json(config, lots), indent=2, sort_keys=True) + "\n")
    return WorldSummary(
        out_dir=out_dir,
        lots=config.lots,
        photos=config.lots * config.photos_per_lot,
        fraud_counts=dict(sorted(Counter(lots.kinds).items())),
        lots_per_region=dict(sorted(Counter(lots.regions).items())),
        lots_per_season={int(k): v for k, v in sorted(Counter(lots.seasons.tolist()).items())},
        lots_per_variety=dict(
            sorted(Counter(f"{s}/{v}" for s, v in zip(lots.species, lots.varieties, strict=True)).items())
        ),
        devices=tuple(sorted(set(lots.devices))),
        seconds=time.perf_counter() - started,
    )


def _with_regions(config: WorldConfig, regions: tuple[str, ...], unreferenced: tuple[str, ...]) -> WorldConfig:
    values = asdict(config)
    values.update(regions=regions, unreferenced_regions=unreferenced)
    for key in ("seasons", "devices", "trays", "species", "fraud_kinds"):
        if values[key] is not None:
            values[key] = tuple(values[key])
    return WorldConfig(**values)


def _render_all(jobs: list[LotPhotoJob], workers: int, progress: ProgressCallback | None) -> None:
    """Photograph every lot, in worker processes when workers > 1; reports progress per lot."""
    total = len(jobs)
    if progress:
        progress(0, total)
    if workers <= 1 or total <= 2:
        for done, job in enumerate(jobs, start=1):
            photograph_lot(job)
            if progress:
                progress(done, total)
        return
    # spawn, not fork: the parent may hold threads (progress bar, BLAS) that fork would copy mid-lock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for done, _ in enumerate(pool.map(photograph_lot, jobs, chunksize=2), start=1):
            if progress:
                progress(done, total)
