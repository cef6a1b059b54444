"""/v1/reference-lots and /v1/reference-models: reference data and model versions (admin keys)."""

from __future__ import annotations

import io
from typing import Annotated, Any

import anyio
import numpy as np
from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.openapi.spec import Example
from litestar.params import Body, PathParameter, QueryParameter
from sqlmodel import Session

from grainproof.api.auth import requires_role
from grainproof.api.contract import (
    ImportResult,
    ModelBuildInput,
    ReferenceLot,
    ReferenceLotPage,
    ReferenceModel,
    shaped,
)
from grainproof.api.dependencies import ACCEPTS, request_json, request_media_type
from grainproof.api.openapi import ManifestImportOperation, ReferenceLotOperation, problems
from grainproof.api.runtime import Runtime
from grainproof.api.schemas import MAX_OFFSET, RequestError
from grainproof.api.services.references import (
    activate_model,
    add_reference_lot,
    get_model,
    get_reference_lot,
    import_reference_manifest,
    list_models,
    list_reference_lots,
    request_model_build,
)
from grainproof.store.tables import ApiKey

_ADMIN = [requires_role("admin")]
_READERS = [requires_role("auditor", "admin")]

LotId = Annotated[str, PathParameter(description="The reference lot's id.", max_length=200)]
ModelId = Annotated[str, PathParameter(description="The model version's id (a UUID).", max_length=36)]


class ReferenceLotController(Controller):
    path = "/v1/reference-lots"
    tags = ("reference",)

    @post(
        "/",
        operation_id="create_reference_lot",
        summary="Add one reference lot (claim fields plus `features`)",
        description="Every problem of the lot is reported at once (422, `errors`); a lot id already taken is 409.",
        guards=_ADMIN,
        status_code=201,
        operation_class=ReferenceLotOperation,
        responses=problems(400, 403, 409, 413, 415, 422),
        opt={ACCEPTS: ("application/json",)},
    )
    async def create(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> ReferenceLot:
        """Add one lot of known origin."""
        data = await request_json(request)
        view = await anyio.to_thread.run_sync(add_reference_lot, runtime, data)
        return shaped(view, ReferenceLot)

    @post(
        "/import",
        operation_id="import_reference_lots",
        summary="Import a lot manifest with f_* columns (CSV body or multipart `manifest` + optional `units` .npz)",
        description="All rows or none: a bad row is reported with every other (400, `errors`, one per row).",
        guards=_ADMIN,
        status_code=201,
        operation_class=ManifestImportOperation,
        responses=problems(400, 403, 409, 413, 415, 422),
        opt={ACCEPTS: ("text/csv", "multipart/form-data")},
    )
    async def import_manifest(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> ImportResult:
        """Add every lot of a manifest."""
        units: dict[str, np.ndarray] | None = None
        photos: dict[str, bytes] = {}
        name = "upload"
        if request_media_type(request) == "multipart/form-data":
            form = await request.form()
            manifest = form.get("manifest")
            if not isinstance(manifest, UploadFile):
                raise RequestError("The multipart form needs a `manifest` file (the lot manifest CSV).")
            name = manifest.filename or name
            raw = await manifest.read()
            units_file = form.get("units")
            if isinstance(units_file, UploadFile):
                units = _read_units(await units_file.read())
            # `photos` files named as the manifest's photos column names them: stored for the desk.
            sent = [f for f in form.getall("photos") if isinstance(f, UploadFile)] if "photos" in form else []
            photos = {f.filename or "": await f.read() for f in sent}
        else:
            raw = await request.body()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise RequestError("The manifest is not UTF-8 text; save the CSV as UTF-8.") from None
        result = await anyio.to_thread.run_sync(
            lambda: import_reference_manifest(
                runtime, text, name=name, units=units, photos=photos.get if photos else None
            )
        )
        return shaped(result, ImportResult)

    @get(
        "/",
        operation_id="list_reference_lots",
        summary="Reference lots, newest first",
        guards=_READERS,
        sync_to_thread=True,
        responses=problems(400, 403),
    )
    def index(
        self,
        session: NamedDependency[Session],
        species: Annotated[str | None, QueryParameter(description="Only this species.", max_length=200)] = None,
        variety: Annotated[str | None, QueryParameter(description="Only this variety.", max_length=200)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="At most this many lots (1 to 500).")] = 50,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET, description="Skip this many lots.")] = 0,
    ) -> ReferenceLotPage:
        """A page of reference lots (their vectors' length, not the vectors)."""
        page = list_reference_lots(session, species=species, variety=variety, limit=limit, offset=offset)
        return shaped(page, ReferenceLotPage)

    @get(
        "/{lot_id:str}",
        operation_id="get_reference_lot",
        summary="One reference lot (for the auditor's nearest-lot evidence)",
        guards=_READERS,
        sync_to_thread=True,
        responses=problems(400, 403, 404),
    )
    def detail(self, session: NamedDependency[Session], lot_id: LotId) -> ReferenceLot:
        """A reference lot by its lot id."""
        return shaped(get_reference_lot(session, lot_id), ReferenceLot)


def _read_units(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {key: np.asarray(archive[key], dtype=np.float64) for key in archive.files}
    except Exception:  # numpy raises several types for a file that is not an .npz
        raise RequestError("The `units` file is not a NumPy .npz archive (keys = lot ids).") from None


class ReferenceModelController(Controller):
    path = "/v1/reference-models"
    tags = ("reference",)
    guards = _ADMIN

    @post(
        "/",
        operation_id="create_reference_model",
        summary="Build a new model version from the reference lots, in the background",
        description="Answers at once with the version `queued`; poll it until `ready` (or `failed`, with the "
        "error), then activate it. 409 when there are no reference lots.",
        status_code=202,
        sync_to_thread=True,
        responses=problems(400, 403, 409, 413, 415),
        opt={ACCEPTS: ("application/json",)},
    )
    def create(
        self,
        runtime: NamedDependency[Runtime],
        caller: NamedDependency[ApiKey],
        data: Annotated[
            ModelBuildInput | None, Body(examples=[Example(summary="A seeded build", value={"seed": 0})])
        ] = None,
    ) -> ReferenceModel:
        """Queue a model build."""
        options = data or ModelBuildInput()
        view = request_model_build(runtime, caller=caller, seed=options.seed, region_set=options.region_set)
        return shaped(view, ReferenceModel)

    @get(
        "/",
        operation_id="list_reference_models",
        summary="Model versions, newest first",
        sync_to_thread=True,
        responses=problems(403),
    )
    def index(self, session: NamedDependency[Session]) -> list[ReferenceModel]:
        """Every model version and its build status."""
        return shaped(list_models(session), list[ReferenceModel])

    @get(
        "/{model_id:str}",
        operation_id="get_reference_model",
        summary="One model version and its build status",
        sync_to_thread=True,
        responses=problems(400, 403, 404),
    )
    def detail(self, session: NamedDependency[Session], model_id: ModelId) -> ReferenceModel:
        """A model version: `queued`, `building`, `ready` or `failed` (with the error)."""
        return shaped(get_model(session, model_id), ReferenceModel)

    @post(
        "/{model_id:str}/activate",
        operation_id="activate_reference_model",
        summary="Make a ready model version the active one",
        description="Verdicts switch to it from the next request, in one transaction; 409 if it is not ready.",
        status_code=200,
        sync_to_thread=True,
        responses=problems(400, 403, 404, 409),
    )
    def activate(self, runtime: NamedDependency[Runtime], model_id: ModelId) -> ReferenceModel:
        """Activate a ready model version."""
        return shaped(activate_model(runtime, model_id), ReferenceModel)
