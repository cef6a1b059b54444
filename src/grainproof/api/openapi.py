"""How the API describes itself at /schema: every error response with its Problem Details body, and
the request bodies that controllers parse themselves (to report every problem of a claim at once,
and to take JSON or multipart on one path).

Those bodies are described from the same Structs as the typed ones (`grainproof.api.contract`), by
msgspec's JSON Schema generator; their nested types refer to the components litestar registers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIMediaType, Operation, RequestBody, Schema

from grainproof.api.contract import CLAIM_EXAMPLE, Claim, Problem, ReferenceLotInput, VerificationInput
from grainproof.api.errors import PROBLEM_MEDIA_TYPE, problem_type

COMPONENTS = "#/components/schemas/"

#: When each status is answered, and an example of its body.
_PROBLEMS: dict[int, tuple[str, str, str]] = {
    400: ("validation", "A parameter or the body does not match this description.", "limit: Expected `int`"),
    401: ("not_authorized", "No API key, or an unknown or revoked one.", "The API key is unknown or revoked."),
    403: ("permission_denied", "The key's role does not allow this.", "An intake key cannot do this."),
    404: ("not_found", "No such record.", "No verification with id 'x'."),
    409: ("model", "The request conflicts with the service's state.", "No reference model is active."),
    413: ("request_entity_too_large", "The body or a photo is over the limit.", "The request body is too large."),
    415: ("unsupported_media_type", "The body's Content-Type is not one this operation reads.", "Send JSON."),
    422: ("claim", "The claim or the vectors are invalid; `errors` lists every problem.", "claim.origin is missing."),
    500: ("internal", "A bug on our side, logged under the incident id.", "Something went wrong on our side."),
}


def problems(*statuses: int, authenticated: bool = True) -> dict[int, ResponseSpec]:
    """The Problem Details responses of an operation: `statuses`, plus 401 (with a key) and 500 (always)."""
    wanted = sorted({*statuses, *((401,) if authenticated else ()), 500})
    responses = {}
    for status in wanted:
        kind, when, detail = _PROBLEMS[status]
        example = {"type": problem_type(kind), "title": when, "status": status, "detail": detail}
        responses[status] = ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_MEDIA_TYPE,
            description=when,
            generate_examples=False,
            examples=[Example(summary=kind, value=example)],
        )
    return responses


def struct_schema(shape: type[msgspec.Struct]) -> Schema:
    """The JSON Schema of a Struct, its nested Structs and enums referred to as components."""
    _, components = msgspec.json.schema_components([shape], ref_template=COMPONENTS + "{name}")
    # A plain dict where litestar expects a Schema: its serialiser writes dicts as they are.
    return cast(Schema, components[shape.__name__])


def _binary(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": description}


@dataclass
class VerificationOperation(Operation):
    """POST /v1/verifications takes a claim with precomputed vectors (JSON) or with photos (multipart)."""

    def __post_init__(self) -> None:
        photos = _binary("A photo of the sample on the tray (JPEG or PNG).")
        # No `encoding`: OpenAPI's defaults are right (the claim object is a JSON part, photos are files), and
        # litestar would write `explode: false`, which reads as form-style fields.
        form = {
            "type": "object",
            "required": ["claim", "photos"],
            "properties": {
                "claim": {"$ref": COMPONENTS + Claim.__name__},
                "photos": {"type": "array", "minItems": 1, "items": photos},
                "alpha": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            },
        }
        self.request_body = RequestBody(
            required=True,
            description="A claim with the lot's precomputed vectors (JSON), or the claim as a JSON part plus "
            "the photos (multipart/form-data).",
            content={
                "application/json": OpenAPIMediaType(
                    schema=struct_schema(VerificationInput),
                    examples={
                        "vectors": Example(
                            summary="A claim with its lot vector",
                            value={"claim": CLAIM_EXAMPLE, "vectors": [0.12, -0.4, 1.3, 0.02]},
                        )
                    },
                ),
                "multipart/form-data": OpenAPIMediaType(
                    schema=cast(Schema, form),
                ),
            },
        )


@dataclass
class ReferenceLotOperation(Operation):
    """POST /v1/reference-lots: one lot, parsed like a claim so that every problem is reported."""

    def __post_init__(self) -> None:
        example = {**CLAIM_EXAMPLE, "features": [0.12, -0.4, 1.3, 0.02]}
        self.request_body = RequestBody(
            required=True,
            description="A claim's fields plus the lot's `features` (and optionally `unit_vectors`, `extra`).",
            content={
                "application/json": OpenAPIMediaType(
                    schema=struct_schema(ReferenceLotInput),
                    examples={"lot": Example(summary="A reference lot", value=example)},
                )
            },
        )


@dataclass
class ManifestImportOperation(Operation):
    """POST /v1/reference-lots/import: a manifest CSV as the body, or a multipart upload with its units."""

    def __post_init__(self) -> None:
        csv = {
            "type": "string",
            "description": "A lot manifest (docs/manifest.md) with feature columns f_0 … f_{d-1}.",
            "examples": [
                "lot_id,species,variety,region,harvest_date,f_0,f_1\nL1,soft_wheat,apache,51,2024-07-20,0.1,0.2\n"
            ],
        }
        form = {
            "type": "object",
            "required": ["manifest"],
            "properties": {
                "manifest": _binary("The lot manifest CSV."),
                "units": _binary("The units sidecar .npz of `grainproof embed` (arrays keyed by lot id)."),
            },
        }
        self.request_body = RequestBody(
            required=True,
            description="The manifest as a text/csv body, or as the `manifest` file of a multipart form.",
            content={
                "text/csv": OpenAPIMediaType(schema=cast(Schema, csv)),
                "multipart/form-data": OpenAPIMediaType(schema=cast(Schema, form)),
            },
        )
