"""User-facing errors: each one is a sentence saying what was wrong and what to do.

The CLI prints them without a stack trace and the API turns them into 4xx responses,
so every module raises these (never bare ValueError) for problems a user can fix.
"""

from __future__ import annotations

import re


class GrainproofError(Exception):
    """Base class for problems caused by input a user can correct."""

    #: HTTP status the API answers with.
    status_code: int = 400


class ManifestError(GrainproofError):
    """A lot manifest (CSV) has missing columns or bad rows; lists every bad row by line."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{path}: {len(problems)} problem(s) in the lot manifest:\n{shown}{more}")


class PhotoError(GrainproofError):
    """A photo cannot be used (corrupt, not an image, too small or too large)."""

    status_code = 422


class ClaimError(GrainproofError):
    """A declared origin, variety or harvest date is invalid."""

    status_code = 422


class UnknownVarietyError(ClaimError):
    """The claimed species/variety has no reference distribution."""


class ModelError(GrainproofError):
    """A reference model is missing, corrupt or incompatible with the input vectors."""

    status_code = 409


class NotFoundError(GrainproofError):
    """A requested record does not exist."""

    status_code = 404


def error_kind(exc: BaseException) -> str:
    """A stable snake_case name for the error (ClaimError -> claim, PhotoTooLargeError -> photo_too_large).

    An error class may name its kind (`kind = "validation"`) to share one with others.
    """
    declared = getattr(type(exc), "kind", None)
    return declared if isinstance(declared, str) else class_kind(type(exc))


def class_kind(cls: type) -> str:
    """The snake_case kind an error class's name gives (UnknownVarietyError -> unknown_variety)."""
    name = cls.__name__.removesuffix("Exception").removesuffix("Error") or "error"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
