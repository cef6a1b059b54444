"""A reference of two species: soft wheat from the simulator beside real rice photos.

A second species once switched its own detection off: photographed with one phone, all its lots fell in one
cross-conformal fold, none got a calibration score, and every rice claim came out p = 1, "plausible".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grainproof.domain import Claim, LotRecord, Origin
from grainproof.embed import lot_embedding
from grainproof.reference import ReferenceModel
from grainproof.services.references import build_reference_model
from grainproof.services.verification import verify_vectors

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]
ALPHA = 0.05


@pytest.fixture(scope="module")
def wheat_lots(tmp_path_factory: pytest.TempPathFactory) -> list[LotRecord]:
    """A small simulated soft-wheat world, embedded (its lots come from 14 phones)."""
    from grainproof.embed import get_embedder
    from grainproof.manifest import read_manifest
    from grainproof.settings import Settings
    from grainproof.simulate import WorldConfig, simulate_world

    root = tmp_path_factory.mktemp("two-species")
    summary = simulate_world(
        WorldConfig(lots=40, photos_per_lot=1, seed=3, max_photo_side=320, species=("soft_wheat",)),
        root / "world",
        workers=1,
    )
    lots = read_manifest(summary.reference_csv)
    embedder = get_embedder(settings=Settings(data_dir=root / "data", torch_threads=2))
    photos = embedder.embed_files([summary.out_dir / lot.photos[0] for lot in lots])
    return [
        LotRecord(claim=lot.claim, device=lot.device, features=tuple(float(x) for x in photo.vector))
        for lot, photo in zip(lots, photos, strict=True)
    ]


def _rice_lots(names: list[str], photos: list, used: slice) -> list[tuple[str, LotRecord]]:
    """Lots of 5 kernels of one variety, from the photos of each variety in `used`; one phone for all."""
    out = []
    varieties = sorted({n.split("_")[0] for n in names})
    for variety in varieties:
        mine = [i for i, n in enumerate(names) if n.startswith(variety)][used]
        for start in range(0, len(mine) - 4, 5):
            members = mine[start : start + 5]
            embedding = lot_embedding([photos[i] for i in members])
            claim = Claim(lot_id=f"{variety}-{members[0]}", species="rice", variety=variety, origin=Origin(region="TR"))
            out.append((variety, LotRecord(claim=claim, device="lab-camera", features=tuple(embedding.vector))))
    return out


def test_rice_substitutions_are_flagged_beside_a_second_species_as_on_rice_alone(
    wheat_lots: list[LotRecord],
    rice_photo_embeddings,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    names, photos = rice_photo_embeddings
    reference_rice = [lot for _, lot in _rice_lots(names, photos, slice(0, 60))]
    intake = _rice_lots(names, photos, slice(60, 80))
    both = build_reference_model([*wheat_lots, *reference_rice], tmp_path / "both")
    alone = build_reference_model(reference_rice, tmp_path / "rice")
    rice = ReferenceModel.load(tmp_path / "both").species["rice"]
    assert np.isfinite(rice.calibration[:, 0]).all() and len(np.unique(rice.lot_folds)) > 1
    flags: dict[str, list[bool]] = {"both": [], "alone": []}
    for variety, lot in intake:
        for declared in sorted({v for v, _ in intake} - {variety}):
            claim = Claim(lot_id=lot.lot_id, species="rice", variety=declared, origin=Origin(region="TR"))
            for name, model in (("both", both), ("alone", alone)):
                verdict = verify_vectors(model, claim, np.asarray(lot.features), alpha=ALPHA)
                assert verdict.status != "uncalibrated"
                flags[name].append(verdict.flagged)
    # Karacadag kernels declared as Jasmine (and every other substitution) are flagged beside the wheat as
    # they are on a rice-only reference; before, the two-species reference flagged none (p = 1).
    assert np.mean(flags["both"]) >= 0.9, np.mean(flags["both"])
    assert abs(np.mean(flags["both"]) - np.mean(flags["alone"])) <= 0.05
