"""Evidence for auditors: region polygons as GeoJSON, and stored photos by content hash."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from grainproof.api.auth import requires_role
from grainproof.api.runtime import Runtime
from grainproof.errors import GrainproofError, NotFoundError


class EvidenceController(Controller):
    tags = ("evidence",)

    @get(
        "/v1/regions/{region_set:str}",
        summary="A region set as GeoJSON (code, name, geometry)",
        media_type="application/geo+json",
        sync_to_thread=True,
    )
    def regions(self, runtime: NamedDependency[Runtime], region_set: FromPath[str]) -> Response[bytes]:
        from grainproof.geo import load_region_set

        try:
            regions = load_region_set(region_set, settings=runtime.settings)
        except GrainproofError as exc:
            raise NotFoundError(str(exc)) from None
        return Response(
            regions.frame.to_json(drop_id=True).encode("utf-8"),
            media_type="application/geo+json",
            headers={"Cache-Control": "max-age=3600"},
        )

    @get(
        "/v1/photos/{digest:str}",
        summary="A stored photo by its sha256",
        guards=[requires_role("auditor", "admin")],
        sync_to_thread=True,
    )
    def photo(self, runtime: NamedDependency[Runtime], digest: FromPath[str]) -> Response[bytes]:
        try:
            data = runtime.photos.get(digest)
        except ValueError:
            data = None
        if data is None:
            raise NotFoundError(f"No photo with sha256 {digest!r}.")
        return Response(data, media_type=_image_type(data), headers={"Cache-Control": "max-age=31536000, immutable"})


def _image_type(data: bytes) -> str:
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG"):
        return "image/png"
    return "application/octet-stream"
