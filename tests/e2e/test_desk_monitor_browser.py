"""The calibration monitor in a real browser (headless Debian Chromium, Playwright), like test_desk_browser.

The service runs under uvicorn with every unflagged lot drawn for a blind audit (rate 1) and lots from a
phone the reference never saw, so the monitor raises a low-confidence alert for that phone. An auditor
opens the monitor page (its plots are server-side PNGs and load), acknowledges the alert (it leaves the
list and is in the audit log), then reviews a blind sample from the queue. Screenshots go to
test-artifacts/monitor-*.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_support import DESK_USERS, bootstrap_reference, claim, create_desk_users, make_world, start_service

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ALERT = "low_confidence:phone:phone-new"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    if not CHROMIUM.exists():
        pytest.skip(f"headless Chromium not found at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    import httpx

    from grainproof.api import create_app
    from grainproof.demo import LiveServer

    _, runtime, keys = start_service(tmp_path_factory.mktemp("monitor-desk") / "data", blind_audit_rate=1.0)
    create_desk_users(runtime)
    world = make_world()
    with LiveServer(create_app(runtime.settings, runtime=runtime)) as server:
        url = server.url
        with httpx.Client(base_url=url, timeout=60) as client:
            bootstrap_reference(client, keys, world)
            rng = np.random.default_rng(9)
            for i in range(30):
                device, declared = ("phoneA", "51") if i < 10 else ("phone-new", "51")
                true_origin = "64" if i in (3, 17) else "51"  # two far-origin lots: flagged
                body = {
                    "claim": claim(f"MON-{i:04d}", region=declared, device=device, site="silo-nord"),
                    "vectors": world.vector("apache", true_origin, 2024, rng),
                }
                response = client.post(
                    "/v1/verifications", json=body, headers={"Authorization": f"Bearer {keys['intake']}"}
                )
                assert response.status_code == 201, response.text
        yield url, runtime


def test_auditor_sees_plots_acknowledges_an_alert_and_reviews_a_blind_sample(live: tuple[str, Any]) -> None:
    from playwright.sync_api import expect, sync_playwright
    from sqlmodel import select

    from grainproof.store.audit import verify_chain
    from grainproof.store.database import read_scope
    from grainproof.store.tables import AlertAcknowledgement, AuditEntry, BlindSample, Review

    url, runtime = live
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
            page.goto(f"{url}/desk/monitor")
            page.fill("#username", "alice")
            page.fill("#password", DESK_USERS["alice"][0])
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Calibration monitor")
            plots = page.locator("img.monitor-plot")
            expect(plots).to_have_count(5)
            page.wait_for_function(
                "() => [...document.querySelectorAll('img.monitor-plot')].every(i => i.complete && i.naturalWidth > 0)"
            )
            row = page.locator("tr.alert-row", has=page.locator(f"input[value='{ALERT}']"))
            expect(row).to_have_count(1)
            expect(row).to_contain_text("phone phone-new")
            page.screenshot(path=str(ARTIFACTS / "monitor-alert.png"), full_page=True)

            row.locator("input[name=note]").fill("New phone at silo-nord; reference lots photographed with it.")
            row.locator("button[type=submit]").click()
            expect(page.locator(".alert.success")).to_contain_text(ALERT)
            expect(page.locator("tr.alert-row", has=page.locator(f"input[value='{ALERT}']"))).to_have_count(0)
            page.wait_for_function(
                "() => [...document.querySelectorAll('img.monitor-plot')].every(i => i.complete && i.naturalWidth > 0)"
            )
            page.screenshot(path=str(ARTIFACTS / "monitor-acknowledged.png"), full_page=True)

            page.click("nav.account a:has-text('Queue')")
            blind = page.locator("table.queue tbody tr", has=page.locator(".tag.blind"))
            expect(blind.first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "monitor-queue-blind-samples.png"), full_page=True)
            lot_id = blind.first.locator("a.lot-link").inner_text()
            blind.first.locator("a.lot-link").click()
            expect(page.locator("h1")).to_have_text(f"Lot {lot_id}")
            expect(page.locator(".lot-head .tag.blind")).to_have_text("blind sample")
            page.check("input[name=decision][value=confirmed_genuine]")
            page.fill("#note", "Blind sample: delivery note and seed certificate match the declaration.")
            page.click("#review-form button[type=submit]")
            expect(page.locator(".alert.success")).to_contain_text("Confirmed genuine")
            page.screenshot(path=str(ARTIFACTS / "monitor-blind-sample-reviewed.png"), full_page=True)

            page.click("nav.account a:has-text('Monitor')")
            expect(page.locator("#blind-audit")).to_contain_text("0.0 %")
            page.wait_for_function(
                "() => [...document.querySelectorAll('img.monitor-plot')].every(i => i.complete && i.naturalWidth > 0)"
            )
            page.screenshot(path=str(ARTIFACTS / "monitor-after-review.png"), full_page=True)
        finally:
            browser.close()

    with read_scope(runtime.engine) as session:
        acks = list(session.exec(select(AlertAcknowledgement)))
        assert [(a.alert_key, a.acknowledged_by_user) for a in acks] == [(ALERT, "alice")]
        entry = session.exec(select(AuditEntry).where(AuditEntry.kind == "alert_acknowledgement")).one()
        assert entry.record_id == acks[0].id
        blind_ids = set(session.exec(select(BlindSample.verification_id)))
        reviews = list(session.exec(select(Review).where(Review.reviewer_user == "alice")))
        assert len(reviews) == 1 and reviews[0].verification_id in blind_ids
        assert verify_chain(session).ok
