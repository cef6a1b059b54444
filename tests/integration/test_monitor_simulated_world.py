"""End to end: lots made by `grainproof simulate` (rendered photos, embedded) go through the API as an intake
would send them, and the calibration monitor sees every one of them, grouped by phone and site, with the
phones the reference never saw counted as low-confidence."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pytest
from service_support import start_service, wait_for_model
from typer.testing import CliRunner

from grainproof.cli import app
from grainproof.manifest import feature_columns, read_manifest

pytestmark = [pytest.mark.slow]


def _embedded(world: Path, name: str, tmp: Path) -> list:  # type: ignore[type-arg]
    from grainproof.embed import get_embedder
    from grainproof.settings import Settings

    lots = read_manifest(world / name)
    embedder = get_embedder(settings=Settings(data_dir=tmp / "embed", torch_threads=2))
    photos = embedder.embed_files([world / lot.photos[0] for lot in lots])
    return [(lot, [float(x) for x in photo.vector]) for lot, photo in zip(lots, photos, strict=True)]


def test_simulated_intake_through_the_api_is_seen_by_the_monitor(tmp_path: Path) -> None:
    world = tmp_path / "world"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--out",
            str(world),
            "--lots",
            "200",
            "--photos-per-lot",
            "1",
            "--seed",
            "2",
            "--max-side",
            "320",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    reference = _embedded(world, "reference.csv", tmp_path)
    intake = _embedded(world, "intake.csv", tmp_path)
    dim = len(reference[0][1])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["lot_id", "species", "variety", "region", "harvest_date", "device", *feature_columns(dim)])
    for lot, vector in reference:
        origin = lot.claim.origin
        writer.writerow(
            [
                lot.claim.lot_id,
                lot.claim.species,
                lot.claim.variety,
                origin.region,
                lot.claim.harvest_date.isoformat() if lot.claim.harvest_date else "",
                lot.device or "",
                *map(repr, vector),
            ]
        )
    client, _, keys = start_service(tmp_path / "data", alpha=0.2)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    auditor = {"Authorization": f"Bearer {keys['auditor']}"}
    with client:
        imported = client.post(
            "/v1/reference-lots/import",
            content=buffer.getvalue().encode(),
            headers={**admin, "Content-Type": "text/csv"},
        )
        assert imported.status_code == 201, imported.text
        build = client.post("/v1/reference-models", json={"seed": 0}, headers=admin)
        model = wait_for_model(client, admin, build.json()["id"])
        assert model["status"] == "ready", model.get("error")
        assert client.post(f"/v1/reference-models/{model['id']}/activate", headers=admin).status_code == 200
        reference_phones = {lot.device for lot, _ in reference}
        sent: Counter[str] = Counter()
        unseen = 0
        for lot, vector in intake:
            origin = lot.claim.origin
            body = {
                "claim": {
                    "lot_id": lot.claim.lot_id,
                    "species": lot.claim.species,
                    "variety": lot.claim.variety,
                    "origin": {"region": origin.region},
                    "harvest_date": lot.claim.harvest_date.isoformat() if lot.claim.harvest_date else None,
                    "device": lot.device,
                    "site": "silo-sim",
                },
                "vectors": vector,
            }
            response = client.post(
                "/v1/verifications", json=body, headers={"Authorization": f"Bearer {keys['intake']}"}
            )
            if response.status_code == 422 and response.json()["type"].endswith("unknown_variety"):
                continue  # a variety the small reference lacks: refused, never stored
            assert response.status_code == 201, response.text
            sent[lot.device or ""] += 1
            unseen += lot.device not in reference_phones
        assert sum(sent.values()) >= 10, "most simulated intake lots are verified"
        report = client.get("/v1/monitor/calibration?dimension=phone", headers=auditor).json()
        assert report["lots"] == sum(sent.values())
        seen = {g["group"]: g["lots"] for g in report["groups"] if g["kind"] == "flag_rate"}
        assert seen == dict(sent)
        low = {g["group"]: g["events"] for g in report["groups"] if g["kind"] == "low_confidence"}
        unseen_phones = set(sent) - reference_phones
        for phone in unseen_phones:
            assert low[phone] == sent[phone], f"every lot of the unseen phone {phone} is low-confidence"
        site = client.get("/v1/monitor/calibration?dimension=site", headers=auditor).json()
        assert {g["group"] for g in site["groups"]} == {"silo-sim"}
        assert sum(w["flagged"] for w in report["weeks"]) == sum(
            g["events"] for g in report["groups"] if g["kind"] == "flag_rate"
        )
