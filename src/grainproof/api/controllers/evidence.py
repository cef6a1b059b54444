"""Evidence for auditors: region polygons as GeoJSON, and stored photos by content hash."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema
from litestar.params import PathParameter

from grainproof.api.auth import requires_role
from grainproof.api.contract import RegionCollection
from grainproof.api.openapi import problems
from grainproof.api.runtime import Runtime
from grainproof.errors import GrainproofError, NotFoundError

#: What stored photos are served as: the intake takes any image Pillow reads; these are the usual ones.
PHOTO_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp", "application/octet-stream")


@dataclass
class PhotoOperation(Operation):
    """A photo answers with the image's own media type."""

    def __post_init__(self) -> None:
        binary: dict[str, Any] = {"type": "string", "format": "binary"}
        assert self.responses is not None
        self.responses["200"] = OpenAPIResponse(
            description="The photo file as it was uploaded (JPEG for phone photos; octet-stream for rare formats).",
            content={media_type: OpenAPIMediaType(schema=Schema(**binary)) for media_type in PHOTO_MEDIA_TYPES},
        )


class EvidenceController(Controller):
    tags = ("evidence",)

    @get(
        "/v1/regions/{region_set:str}",
        operation_id="get_region_set",
        summary="A region set as GeoJSON (code, name, geometry)",
        description="For maps: every region of the set with its code and name, in WGS 84; cached for an hour.",
        media_type="application/geo+json",
        sync_to_thread=True,
        responses={
            200: ResponseSpec(
                data_container=RegionCollection,
                media_type="application/geo+json",
                description="The region set as a GeoJSON FeatureCollection.",
                generate_examples=False,
            ),
            **problems(400, 404),
        },
    )
    def regions(
        self,
        runtime: NamedDependency[Runtime],
        region_set: Annotated[
            str, PathParameter(description="A region set's name, e.g. fr-departements.", max_length=100)
        ],
    ) -> Response[bytes]:
        """A region set's polygons."""
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
        operation_id="get_photo",
        summary="A stored photo by its sha256",
        description="Photos are stored by content hash and never change, so they may be cached forever.",
        guards=[requires_role("auditor", "admin")],
        sync_to_thread=True,
        operation_class=PhotoOperation,
        responses=problems(400, 403, 404),
    )
    def photo(
        self,
        runtime: NamedDependency[Runtime],
        digest: Annotated[str, PathParameter(description="The photo's sha256, in hex.", max_length=64)],
    ) -> Response[bytes]:
        """A photo of a verification or of a reference lot."""
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
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
