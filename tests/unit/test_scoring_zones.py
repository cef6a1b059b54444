"""Provenance zones as origin units: lots are grouped by GEO's zones, claims placed by their point."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from grainproof.domain import Claim, LotRecord, Origin
from grainproof.reference import ReferenceModel
from grainproof.services.references import build_reference_model
from grainproof.services.verification import verify_vectors

#: Two cereal areas far apart (around Reims and around Toulouse), with their own appearance.
AREAS = {"51": (4.03, 49.25, 0.0), "31": (1.44, 43.60, 3.0)}


def _lots(n: int, seed: int) -> list[LotRecord]:
    rng = np.random.default_rng(seed)
    lots = []
    for i in range(n):
        region = "51" if i % 2 == 0 else "31"
        lon, lat, shift = AREAS[region]
        lots.append(
            LotRecord(
                claim=Claim(
                    lot_id=f"s{seed}-{i:03d}",
                    species="soft_wheat",
                    variety="v",
                    origin=Origin(lon=round(lon + rng.normal(0, 0.05), 6), lat=round(lat + rng.normal(0, 0.05), 6)),
                    harvest_date=date(2024, 7, 10),
                ),
                features=tuple(rng.normal(shift, 1.0, 4)),
            )
        )
    return lots


@pytest.fixture(scope="module")
def zone_model(tmp_path_factory: pytest.TempPathFactory) -> ReferenceModel:
    out = tmp_path_factory.mktemp("zones") / "model"
    build_reference_model(_lots(160, seed=1), out, origin_units="zones", region_set="fr-departements")
    return ReferenceModel.load(out)


def test_zone_model_uses_provenance_zones_as_origin_units(zone_model: ReferenceModel) -> None:
    ref = zone_model.species["soft_wheat"]
    assert zone_model.origin_units == "zones"
    zones = {o for o in ref.origins if o.startswith("zone:")}
    assert len(zones) >= 2 and all(o.startswith(("zone:", "region:")) for o in ref.origins)
    assert set(zone_model.zone_members) == zones and zone_model.zone_reach_km >= 10.0


def test_claims_are_placed_in_the_zone_of_their_point_and_lies_are_flagged(zone_model: ReferenceModel) -> None:
    probe = _lots(40, seed=2)
    verdicts = [verify_vectors(zone_model, lot.claim, np.asarray(lot.features), alpha=0.05) for lot in probe]
    units = {v.declared_origin_unit for v in verdicts}
    zones = {o for o in zone_model.species["soft_wheat"].origins if o.startswith("zone:")}
    assert units <= set(zone_model.species["soft_wheat"].origins) and zones <= units
    assert sum(v.flagged for v in verdicts) <= 6
    # A Toulouse-looking lot declared near Reims.
    lie = Claim(lot_id="lie", species="soft_wheat", variety="v", origin=Origin(lon=4.05, lat=49.26))
    verdict = verify_vectors(zone_model, lie, np.full(4, 3.0), alpha=0.05)
    assert verdict.flagged and verdict.alternatives[0].origin_unit != verdict.declared_origin_unit


def test_a_point_far_from_every_zone_falls_back_to_its_region(zone_model: ReferenceModel) -> None:
    claim = Claim(lot_id="far", species="soft_wheat", variety="v", origin=Origin(lon=-1.68, lat=48.11))  # Rennes
    verdict = verify_vectors(zone_model, claim, np.zeros(4), alpha=0.05)
    assert verdict.declared_origin_unit == "region:35" and verdict.low_confidence
