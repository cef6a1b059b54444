"""Photos through the API with the real embedder on real rice photos: a reference imported as an
embedded manifest plus its units sidecar, then a multipart verification whose photo is stored by
content hash and served back to auditors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from service_support import Service, start_service, wait_for_model

from grainproof.manifest import feature_columns
from grainproof.store.tables import ReferenceLot

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

VARIETIES = ("arborio", "basmati")
REGIONS = ("51", "10")
PER_VARIETY = 10


@pytest.fixture(scope="module")
def photo_service(rice_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from grainproof.embed import get_embedder, lot_embedding

    embedder = get_embedder()
    paths = [rice_dir / f"{v}_{i:03d}.jpg" for v in VARIETIES for i in range(PER_VARIETY)]
    photos = embedder.embed_files(paths)
    client, runtime, keys = start_service(tmp_path_factory.mktemp("photos") / "data", embedder=embedder)
    columns = ["lot_id", "species", "variety", "region", "harvest_date", "backbone", *feature_columns(embedder.dim)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    units: dict[str, np.ndarray] = {}
    for i, (path, photo) in enumerate(zip(paths, photos, strict=True)):
        lot = lot_embedding([photo])
        lot_id = path.stem
        units[lot_id] = np.asarray(lot.unit_vectors)
        writer.writerow(
            [
                lot_id,
                "rice",
                path.stem.split("_")[0],
                REGIONS[i % 2],
                "2024-09-20",
                embedder.backbone_id,
                *map(repr, lot.vector.tolist()),
            ]
        )
    npz = io.BytesIO()
    np.savez(npz, **units)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    with client:
        imported = client.post(
            "/v1/reference-lots/import",
            files=[
                ("manifest", ("rice.csv", buffer.getvalue().encode(), "text/csv")),
                ("units", ("rice.units.npz", npz.getvalue(), "application/octet-stream")),
            ],
            headers=admin,
        )
        assert imported.status_code == 201, imported.text
        build = client.post("/v1/reference-models", json={"seed": 1}, headers=admin).json()
        model = wait_for_model(client, admin, build["id"])
        assert model["status"] == "ready", model
        assert client.post(f"/v1/reference-models/{model['id']}/activate", headers=admin).status_code == 200
        yield Service(client=client, runtime=runtime, keys=keys, world=None, model_id=model["id"])  # type: ignore[arg-type]


def test_units_sidecar_is_stored_with_the_reference_lots(photo_service: Service) -> None:
    lot = photo_service.client.get("/v1/reference-lots/arborio_000", headers=photo_service.headers("auditor")).json()
    assert lot["has_unit_vectors"] and lot["extra"]["backbone"].startswith("efficientnet_lite0@")
    assert photo_service.count(ReferenceLot) == len(VARIETIES) * PER_VARIETY


def test_photo_verification_is_embedded_stored_by_hash_and_served_back(photo_service: Service, rice_dir: Path) -> None:
    data = (rice_dir / "arborio_050.jpg").read_bytes()
    claim = {
        "lot_id": "rice-lot-1",
        "species": "rice",
        "variety": "arborio",
        "origin": {"region": "51"},
        "harvest_date": "2024-09-21",
    }
    response = photo_service.client.post(
        "/v1/verifications",
        files=[("photos", ("tray.jpg", data, "image/jpeg"))],
        data={"claim": json.dumps(claim)},
        headers=photo_service.headers("intake"),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    digest = hashlib.sha256(data).hexdigest()
    assert body["photos"] == [digest]
    assert body["backbone_id"].startswith("efficientnet_lite0@")
    assert 0.0 <= body["verdict"]["plausibility"] <= 1.0
    assert body["verdict"]["nearest_reference_lots"], "auditors need the nearest reference lots as evidence"
    served = photo_service.client.get(f"/v1/photos/{digest}", headers=photo_service.headers("auditor"))
    assert served.status_code == 200 and served.content == data and served.headers["content-type"] == "image/jpeg"
    assert photo_service.client.get(f"/v1/photos/{digest}", headers=photo_service.headers("intake")).status_code == 403
