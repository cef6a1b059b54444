"""The capture nuisance is real, and origin and season are real signals under it."""

from __future__ import annotations

from grainproof.geo import load_region_set
from grainproof.simulate import DEFAULT_REGIONS, DEFAULT_SEASONS
from grainproof.simulate.checks import latent_separation, neighbour_pairs, phone_vs_neighbour_colour
from grainproof.simulate.traits import Nature


def test_phones_change_a_lots_mean_colour_more_than_neighbouring_departements_do() -> None:
    regions = load_region_set("fr-departements")
    assert len(neighbour_pairs(regions, DEFAULT_REGIONS)) >= 10
    measured = phone_vs_neighbour_colour(regions, DEFAULT_REGIONS, Nature(2024))
    # The typical phone change is many times the largest neighbour difference...
    assert measured.phone_median > 5 * measured.neighbour_max
    # ...even the two most similar phones differ more than the most different neighbours...
    assert measured.phone_min > measured.neighbour_max
    # ...but the neighbour difference is there: origin is in the pixels, just small.
    assert measured.neighbour_median > 0.05


def test_neighbours_differ_less_than_far_departements_yet_more_than_lots_of_one_place() -> None:
    separation = latent_separation(load_region_set("fr-departements"), DEFAULT_REGIONS, Nature(2024), DEFAULT_SEASONS)
    assert separation.neighbour_pairs >= 10 and separation.far_pairs >= 10
    assert 2.0 < separation.neighbour_median < separation.far_median
    assert separation.season_median > 2.0
