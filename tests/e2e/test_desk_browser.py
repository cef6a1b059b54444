"""The auditor's desk in a real browser: headless Debian Chromium driven by Playwright.

The service runs under uvicorn on a free localhost port with a temporary data dir, a small
synthetic reference model (its lots with photos) and a few verifications, some flagged, one with
photos of its sample. A named auditor logs in, sorts the queue, exports it as CSV, opens the lot with
photos (they are on the first screen) and records a decision; contradicting it herself is refused,
a second auditor's contradiction with a note is recorded (four-eyes). The test then reads the reviews
from the database. Screenshots go to test-artifacts/desk-*.png for people to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_support import (
    DESK_USERS,
    bootstrap_reference,
    claim,
    create_desk_users,
    make_world,
    reference_photos,
    start_service,
    store_photo_verification,
)

from synthetic_trays import jpeg_bytes, tray_photo

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

#: (lot id, true origin, declared origin): two genuine claims, three false ones.
LOTS = (
    ("INTAKE-0001", "51", "51"),
    ("INTAKE-0002", "10", "10"),
    ("INTAKE-0003", "64", "51"),
    ("INTAKE-0004", "29", "02"),
    ("INTAKE-0005", "80", "64"),
)
#: A far-origin lot whose sample photos (three, taken without the calibration card) are stored.
PHOTO_LOT = "INTAKE-0006"
#: The browser's zone: the desk shows times in it.
BROWSER_ZONE = "Europe/Paris"


@dataclass
class LiveService:
    url: str
    runtime: Any
    keys: dict[str, str]
    verifications: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    if not CHROMIUM.exists():
        pytest.skip(f"headless Chromium not found at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    import httpx

    from grainproof.api import create_app
    from grainproof.demo import LiveServer

    # start_service's TestClient is left unused: the browser talks to a real server instead.
    _, runtime, keys = start_service(tmp_path_factory.mktemp("desk") / "data")
    create_desk_users(runtime)
    world = make_world()
    verifications: dict[str, dict[str, Any]] = {}
    with LiveServer(create_app(runtime.settings, runtime=runtime)) as server:
        url = server.url
        with httpx.Client(base_url=url, timeout=60) as client:
            bootstrap_reference(client, keys, world, photos=reference_photos())
            rng = np.random.default_rng(5)
            for lot_id, true_origin, declared in LOTS:
                body = {
                    "claim": claim(lot_id, region=declared, device="pixel-7", site="silo-nord"),
                    "vectors": world.vector("apache", true_origin, 2024, rng),
                }
                response = client.post(
                    "/v1/verifications", json=body, headers={"Authorization": f"Bearer {keys['intake']}"}
                )
                assert response.status_code == 201, response.text
                verifications[lot_id] = response.json()
            photos = {f"tray-{i}.jpg": jpeg_bytes(tray_photo(seed=60 + i, card=False)) for i in range(3)}
            photo_id = store_photo_verification(
                runtime, verifications["INTAKE-0003"]["id"], lot_id=PHOTO_LOT, photos=photos
            )
            verifications[PHOTO_LOT] = client.get(
                f"/v1/verifications/{photo_id}", headers={"Authorization": f"Bearer {keys['auditor']}"}
            ).json()
        yield LiveService(url=url, runtime=runtime, keys=keys, verifications=verifications)


def _browser(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def _log_in(page: Any, url: str, username: str) -> None:
    page.fill("#username", username)
    page.fill("#password", DESK_USERS[username][0])
    page.click("button[type=submit]")


def test_named_auditor_sorts_exports_reviews_and_meets_the_four_eyes_rule(
    live_service: LiveService, tmp_path: Path
) -> None:
    import csv

    from playwright.sync_api import expect, sync_playwright
    from sqlmodel import select

    from grainproof.store.database import session_scope
    from grainproof.store.tables import Review

    url = live_service.url
    lot = live_service.verifications[PHOTO_LOT]
    assert lot["flagged"], "the lot with photos is a far-origin lot: it should be flagged"
    plausibility = {v["lot_id"]: v["plausibility"] for v in live_service.verifications.values()}
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = _browser(playwright)
        try:
            context = browser.new_context(
                viewport={"width": 1360, "height": 900}, timezone_id=BROWSER_ZONE, accept_downloads=True
            )
            page = context.new_page()
            page.goto(f"{url}/desk/")
            expect(page).to_have_url(f"{url}/desk/login?next=%2Fdesk")
            page.screenshot(path=str(ARTIFACTS / "desk-login.png"))
            _log_in(page, url, "alice")
            expect(page.locator(".who")).to_have_text("alice · auditor")

            queue = page.locator("table.queue tbody tr")
            expect(queue.first).to_be_visible()
            shown = page.locator("a.lot-link").all_inner_texts()
            expected = {lot_id for lot_id, view in live_service.verifications.items() if view["flagged"]}
            assert set(shown) == expected, "the default queue lists exactly the open flagged lots"
            expect(page.locator("footer .zone")).to_have_text(f"times in {BROWSER_ZONE}")

            page.select_option("select[name=status]", "all")
            page.select_option("select[name=flagged]", "all")
            page.click("form.filters button[type=submit]")
            expect(page.locator("a.lot-link")).to_have_count(len(live_service.verifications))
            page.click("th a.sort:has-text('Plausibility')")
            expect(page).to_have_url(re.compile(r"sort=least_plausible"))
            by_plausibility = page.locator("a.lot-link").all_inner_texts()
            assert [plausibility[i] for i in by_plausibility] == sorted(plausibility.values())
            assert len(set(plausibility.values())) > 2, "genuine and false lots differ in plausibility"
            page.screenshot(path=str(ARTIFACTS / "desk-queue.png"), full_page=True)

            with page.expect_download() as download_info:
                page.click("a.export")
            exported = tmp_path / "queue.csv"
            download_info.value.save_as(exported)
            with exported.open(encoding="utf-8", newline="") as handle:
                rows = list(csv.DictReader(handle))
            assert [r["lot_id"] for r in rows] == by_plausibility, "the export holds the queue as filtered and sorted"
            assert all(r["received"].endswith(("+01:00", "+02:00")) for r in rows), "times in the browser's zone"

            page.click(f"a.lot-link:text-is('{PHOTO_LOT}')")
            expect(page.locator("h1")).to_have_text(f"Lot {PHOTO_LOT}")
            expect(page.locator(".verdict.bad")).to_be_visible()
            photos = page.locator(".sample .photos img")
            expect(photos).to_have_count(3)
            for i in range(3):
                expect(photos.nth(i)).to_be_in_viewport()
            page.wait_for_function(
                "() => [...document.querySelectorAll('.sample img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            expect(page.locator(".warnings li", has_text="no calibration card")).to_have_count(1)
            page.screenshot(path=str(ARTIFACTS / "desk-lot-first-screen.png"))
            page.wait_for_function(
                "() => { const m = document.querySelector('img.map'); return m && m.complete && m.naturalWidth > 0; }",
                timeout=60_000,
            )
            page.screenshot(path=str(ARTIFACTS / "desk-lot.png"), full_page=True)

            page.check("input[name=decision][value=false_alarm]")
            page.fill("#note", "The seed certificate names a farm in the Marne.")
            page.click("#review-form button[type=submit]")
            expect(page.locator(".alert.success")).to_contain_text("False alarm")

            page.check("input[name=decision][value=confirmed_fraud]")
            page.fill("#note", "On second thoughts, fraud.")
            page.click("#review-form button[type=submit]")
            expect(page.locator(".alert.error")).to_contain_text("a second auditor must make it")
            page.screenshot(path=str(ARTIFACTS / "desk-four-eyes-refused.png"), full_page=True)

            page.click("text=Log out")
            page.goto(f"{url}/desk/lots/{lot['id']}")
            _log_in(page, url, "bob")
            expect(page.locator("h1")).to_have_text(f"Lot {PHOTO_LOT}")
            page.check("input[name=decision][value=confirmed_fraud]")
            page.fill("#note", "The delivery note names a farm in Pyrénées-Atlantiques.")
            page.click("#review-form button[type=submit]")
            expect(page.locator(".alert.success")).to_contain_text("Confirmed fraud")
            history = page.locator(".history li")
            expect(history).to_have_count(2)
            expect(history.nth(0)).to_contain_text("alice")
            expect(history.nth(1)).to_contain_text("bob")
            expect(history.nth(1)).to_contain_text("Overrides decision 1")
            expect(history.nth(1)).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d CES?T"))
            page.screenshot(path=str(ARTIFACTS / "desk-reviewed.png"), full_page=True)
        finally:
            browser.close()

    with session_scope(live_service.runtime.engine) as session:
        reviews = list(
            session.exec(select(Review).where(Review.verification_id == lot["id"]).order_by(Review.created_at))
        )
    assert [(r.decision, r.reviewer_user) for r in reviews] == [("false_alarm", "alice"), ("confirmed_fraud", "bob")]
    assert reviews[1].overrides == reviews[0].id


def test_an_api_key_or_a_wrong_password_does_not_open_the_desk(live_service: LiveService) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page()
            page.goto(f"{live_service.url}/desk/login")
            page.fill("#username", "alice")
            page.fill("#password", live_service.keys["auditor"])
            page.click("button[type=submit]")
            expect(page.locator(".alert.error")).to_contain_text("Wrong username or password")
            page.goto(f"{live_service.url}/desk/")
            expect(page).to_have_url(f"{live_service.url}/desk/login?next=%2Fdesk")
        finally:
            browser.close()
