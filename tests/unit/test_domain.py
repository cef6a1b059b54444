"""Domain types refuse impossible values themselves, so no later step has to re-check them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grainproof.domain import Alternative, Origin
from grainproof.errors import ClaimError


def test_origin_needs_a_point_a_polygon_or_a_region() -> None:
    with pytest.raises(ClaimError, match="needs a point"):
        Origin()


def test_origin_rejects_half_a_point() -> None:
    with pytest.raises(ClaimError, match="both longitude and latitude"):
        Origin(lon=4.0)


@given(lat=st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not -90 <= v <= 90))
def test_origin_rejects_any_latitude_off_the_globe(lat: float) -> None:
    with pytest.raises(ClaimError):
        Origin(lon=4.0, lat=lat)


@given(probability=st.floats(), p_value=st.floats())
def test_alternative_probabilities_stay_in_unit_interval(probability: float, p_value: float) -> None:
    if 0 <= probability <= 1 and 0 <= p_value <= 1:
        assert Alternative(origin_unit="51", season=2025, probability=probability, p_value=p_value).probability == (
            probability
        )
    else:
        with pytest.raises(ValueError):
            Alternative(origin_unit="51", season=2025, probability=probability, p_value=p_value)
