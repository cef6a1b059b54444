"""An integrator's view: a Python client generated from /schema (datamodel-code-generator, nothing written
by hand) drives the running service end to end: reference, model build, intake, queue, review, EPCIS,
errors. Its models forbid undocumented fields, so any answer that strays from the description fails here."""

from __future__ import annotations

import importlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from service_support import make_world, reference_manifest, start_service

from grainproof.scale.verify_bench import free_loopback_port

pytestmark = pytest.mark.slow

PACKAGE = "grainproof_generated_client"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The service listening on a loopback port (a real uvicorn server), and a key per role."""
    test_client, _, keys = start_service(tmp_path_factory.mktemp("client") / "data", gs1_gtin="09506000134352")
    port = free_loopback_port()
    server = uvicorn.Server(uvicorn.Config(test_client.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="grainproof-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", keys
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def generated(running: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The client package generated from the running service's /schema, imported."""
    from datamodel_code_generator import DataModelType, InputFileType, generate

    base_url, _ = running
    document = httpx.get(f"{base_url}/schema/openapi.json").json()  # no key: the description is public
    document["servers"] = [{"url": base_url}]
    out = tmp_path_factory.mktemp("generated")
    files = generate(
        json.dumps(document),
        input_file_type=InputFileType.OpenAPI,
        output_model_type=DataModelType.PydanticV2BaseModel,
        extra_fields="forbid",
        formatters=[],
        generate_client="httpx2",
        client_output=out,
        client_package=PACKAGE,
        client_model_package=f"{PACKAGE}.models",
    )
    assert isinstance(files, dict)
    for parts, text in files.items():
        path = out.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))


def test_a_generated_client_verifies_reviews_and_exports_a_lot(
    generated: ModuleType, running: tuple[str, dict[str, str]]
) -> None:
    models: Any = importlib.import_module(f"{PACKAGE}.models")
    errors: Any = importlib.import_module(f"{PACKAGE}.errors")
    base_url, keys = running
    world = make_world()

    with generated.Client(base_url=base_url, api_key=keys["admin"]) as admin:
        imported = admin.reference.import_reference_lots(
            body=models.V1ReferenceLotsImportPostRequest(reference_manifest(world)), media_type="text/csv"
        )
        assert isinstance(imported, models.ImportResult) and imported.imported == 240
        build = admin.reference.create_reference_model(body=models.V1ReferenceModelsPostRequest(seed=0))
        assert build.status == models.ModelStatus.queued
        while (model := admin.reference.get_reference_model(model_id=build.id)).status not in (
            models.ModelStatus.ready,
            models.ModelStatus.failed,
        ):
            time.sleep(0.1)
        assert model.status == models.ModelStatus.ready, model.error
        assert admin.reference.activate_reference_model(model_id=model.id).is_active

    vector = world.vector("apache", "64", 2024, np.random.default_rng(8))
    claim = models.Claim(
        lot_id="GEN-1",
        species="soft_wheat",
        variety="apache",
        origin=models.Origin(region="51"),
        harvest_date=date(2024, 7, 25),
    )
    with generated.Client(base_url=base_url, api_key=keys["intake"]) as intake:
        created = intake.verifications.create_verification(
            body=models.V1VerificationsPostRequest(claim=claim, vectors=vector),
            media_type="application/json",
            Idempotency_Key="generated-client-1",
        )
    assert isinstance(created, models.Verification) and isinstance(created.verdict, models.Verdict)
    assert created.verdict.flagged and created.verdict.alternatives[0].origin_unit == "64"
    assert created.status == models.VerificationStatus.open and created.model_version == model.version

    with generated.Client(base_url=base_url, api_key=keys["auditor"]) as auditor:
        page = auditor.verifications.list_verifications(flagged=True, status=models.VerificationStatus.open)
        assert [item.id for item in page.items] == [created.id] and not page.has_more
        review = auditor.verifications.create_review(
            verification_id=created.id,
            body=models.V1VerificationsVerificationIdReviewsPostRequest(
                decision=models.ReviewDecision.confirmed_fraud, note="The seller admitted mixing lots."
            ),
        )
        assert isinstance(review, models.Review) and review.decision == models.ReviewDecision.confirmed_fraud
        detail = auditor.verifications.get_verification(verification_id=created.id)
        assert detail.status == models.VerificationStatus.reviewed and detail.reviews == [review]
        document = auditor.verifications.list_epcis_events()
        dispositions = [event.disposition for event in document.epcisBody.eventList]
        assert dispositions == [models.Disposition.non_conformant, models.Disposition.non_conformant]

        with pytest.raises(errors.NotFoundError) as missing:
            auditor.verifications.get_verification(verification_id="no-such-id")
        assert isinstance(missing.value.body, models.Problem) and missing.value.body.status == 404
        with pytest.raises(errors.BadRequestError) as bad:
            auditor.verifications.list_verifications(cursor="not-a-cursor")
        assert bad.value.body.errors[0].parameter == "cursor"
