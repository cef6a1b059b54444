"""What the desk shows people: warnings grouped by photo, only informative alternatives, times in a zone
that is always named, and CSV cells a spreadsheet will not run."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from grainproof.api.desk.pages import (
    MIN_ALTERNATIVE_POSTERIOR,
    WarningGroup,
    _spreadsheet_safe,
    display_zone,
    group_warnings,
    informative_alternatives,
    local_time,
)

CARD = "no calibration card found, so colours and sizes are not calibrated"


def test_a_warning_every_photo_gives_is_one_line_naming_the_photos() -> None:
    warnings = [f"a.jpg: {CARD}", "a.jpg: the photo is blurred", f"b.jpg: {CARD}", f"c.jpg: {CARD}"]
    assert group_warnings(warnings) == [
        WarningGroup(CARD, ("a.jpg", "b.jpg", "c.jpg")),
        WarningGroup("a.jpg: the photo is blurred"),
    ]


def test_warnings_without_a_repeated_message_stay_as_they_are() -> None:
    warnings = ["The kernels could not be measured: treat this verdict as low-confidence.", f"a.jpg: {CARD}"]
    assert group_warnings(warnings) == [WarningGroup(w) for w in warnings]


@given(st.lists(st.sampled_from([f"{p}: {m}" for p in ("a.jpg", "b.jpg") for m in ("dark", "blurred")] + ["plain"])))
def test_grouping_loses_no_warning_and_repeats_none(warnings: list[str]) -> None:
    groups = group_warnings(warnings)
    covered = {f"{photo}: {g.message}" for g in groups for photo in g.photos} | {g.message for g in groups}
    assert set(warnings) <= covered
    assert len({g.message for g in groups}) == len(groups)


def test_alternatives_at_zero_posterior_and_p_at_or_below_alpha_are_left_out() -> None:
    floor = {"probability": 0.0, "p_value": 0.004}
    likely = {"probability": 0.62, "p_value": 0.004}
    plausible = {"probability": 0.0, "p_value": 0.2}
    at_alpha = {"probability": MIN_ALTERNATIVE_POSTERIOR / 2, "p_value": 0.01}
    assert informative_alternatives([likely, floor, plausible, at_alpha, floor], alpha=0.01) == [likely, plausible]
    assert informative_alternatives([floor] * 5, alpha=0.01) == []


def test_times_show_the_zone_they_are_in() -> None:
    moment = "2026-12-03T13:05:00+00:00"
    assert local_time(moment, display_zone(None, None)) == "2026-12-03 13:05 UTC"
    assert local_time(moment, display_zone("Europe/Paris", None)) == "2026-12-03 14:05 CET"
    assert local_time(datetime(2026, 7, 1, 12, tzinfo=UTC), display_zone("Europe/Paris", None)).endswith("CEST")
    assert local_time("2026-12-03T13:05:00", display_zone(None, "Asia/Tokyo")) == "2026-12-03 22:05 JST"


def test_the_browsers_zone_wins_and_bad_names_fall_back() -> None:
    assert display_zone("America/Chicago", "Europe/Paris").key == "America/Chicago"
    assert display_zone("Not/AZone", "Europe/Paris").key == "Europe/Paris"
    assert display_zone("../../etc/passwd", "nonsense").key == "UTC"


def test_csv_cells_that_a_spreadsheet_would_run_are_defused() -> None:
    assert _spreadsheet_safe('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert _spreadsheet_safe("@SUM(A1)") == "'@SUM(A1)"
    assert _spreadsheet_safe("LOT-0001") == "LOT-0001"
