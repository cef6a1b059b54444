"""/v1/reference-lots and /v1/reference-models: reference data and model versions (admin keys)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import numpy as np
from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlmodel import Session

from grainproof.api.auth import requires_role
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelBuildInput:
    """Options of a model build; the lots are every reference lot stored."""

    seed: int | None = None
    region_set: str | None = None


class ReferenceLotController(Controller):
    path = "/v1/reference-lots"
    tags = ("reference",)

    @post("/", summary="Add one reference lot (claim fields plus `features`)", guards=_ADMIN, status_code=201)
    async def create(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> dict[str, Any]:
        data = await request.json()
        return await anyio.to_thread.run_sync(add_reference_lot, runtime, data)

    @post(
        "/import",
        summary="Import a lot manifest with f_* columns (CSV body or multipart `manifest` + optional `units` .npz)",
        guards=_ADMIN,
        status_code=201,
    )
    async def import_manifest(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]
    ) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        units: dict[str, np.ndarray] | None = None
        photos: dict[str, bytes] = {}
        name = "upload"
        if content_type == "multipart/form-data":
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
        return await anyio.to_thread.run_sync(
            lambda: import_reference_manifest(
                runtime, text, name=name, units=units, photos=photos.get if photos else None
            )
        )

    @get("/", summary="Reference lots, newest first", guards=_READERS, sync_to_thread=True)
    def index(
        self,
        session: NamedDependency[Session],
        species: FromQuery[str | None] = None,
        variety: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        return list_reference_lots(session, species=species, variety=variety, limit=limit, offset=offset)

    @get(
        "/{lot_id:str}",
        summary="One reference lot (for the auditor's nearest-lot evidence)",
        guards=_READERS,
        sync_to_thread=True,
    )
    def detail(self, session: NamedDependency[Session], lot_id: FromPath[str]) -> dict[str, Any]:
        return get_reference_lot(session, lot_id)


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
        summary="Build a new model version from the reference lots, in the background",
        status_code=202,
        sync_to_thread=True,
    )
    def create(
        self,
        runtime: NamedDependency[Runtime],
        caller: NamedDependency[ApiKey],
        data: JSONBody[ModelBuildInput | None] = None,
    ) -> dict[str, Any]:
        options = data or ModelBuildInput()
        return request_model_build(runtime, caller=caller, seed=options.seed, region_set=options.region_set)

    @get("/", summary="Model versions, newest first", sync_to_thread=True)
    def index(self, session: NamedDependency[Session]) -> list[dict[str, Any]]:
        return list_models(session)

    @get("/{model_id:str}", summary="One model version and its build status", sync_to_thread=True)
    def detail(self, session: NamedDependency[Session], model_id: FromPath[str]) -> dict[str, Any]:
        return get_model(session, model_id)

    @post(
        "/{model_id:str}/activate",
        summary="Make a ready model version the active one",
        status_code=200,
        sync_to_thread=True,
    )
    def activate(self, runtime: NamedDependency[Runtime], model_id: FromPath[str]) -> dict[str, Any]:
        return activate_model(runtime, model_id)
