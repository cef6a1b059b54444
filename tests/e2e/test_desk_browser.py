"""The auditor's desk in a real browser: headless Debian Chromium driven by Playwright.

The service runs under uvicorn on a free localhost port with a temporary data dir, a small
synthetic reference model and a few verifications, some flagged. An auditor logs in, opens the
queue, opens a flagged lot and records a decision; the test then reads the review from the
database. Screenshots go to test-artifacts/desk-*.png for people to look at.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_support import bootstrap_reference, claim, make_world, start_service

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


@dataclass
class LiveService:
    url: str
    runtime: Any
    keys: dict[str, str]
    verifications: dict[str, dict[str, Any]]


def _free_socket() -> socket.socket:
    """A listening socket on a free localhost port, handed to uvicorn (no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="module")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    if not CHROMIUM.exists():
        pytest.skip(f"headless Chromium not found at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    import httpx
    import uvicorn

    from grainproof.api import create_app

    # start_service's TestClient is left unused: the browser talks to a real server instead.
    _, runtime, keys = start_service(tmp_path_factory.mktemp("desk") / "data")
    app = create_app(runtime.settings, runtime=runtime)
    sock = _free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 30 s")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    world = make_world()
    verifications: dict[str, dict[str, Any]] = {}
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            bootstrap_reference(client, keys, world)
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
        yield LiveService(url=url, runtime=runtime, keys=keys, verifications=verifications)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _browser(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def test_auditor_logs_in_opens_a_flagged_lot_and_records_a_review(live_service: LiveService) -> None:
    from playwright.sync_api import expect, sync_playwright
    from sqlmodel import select

    from grainproof.store.database import session_scope
    from grainproof.store.tables import Review

    flagged = live_service.verifications["INTAKE-0003"]
    assert flagged["flagged"], "the far-origin lot should be flagged for this test to mean anything"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.goto(f"{live_service.url}/desk/")
            expect(page).to_have_url(f"{live_service.url}/desk/login?next=%2Fdesk")
            page.fill("#api_key", live_service.keys["auditor"])
            page.click("button[type=submit]")

            queue = page.locator("table.queue tbody tr")
            expect(queue.first).to_be_visible()
            shown = set(page.locator("a.lot-link").all_inner_texts())
            expected = {lot_id for lot_id, view in live_service.verifications.items() if view["flagged"]}
            assert shown == expected, "the default queue lists exactly the open flagged lots"
            page.screenshot(path=str(ARTIFACTS / "desk-queue.png"), full_page=True)

            page.click("a.lot-link:text-is('INTAKE-0003')")
            expect(page.locator("h1")).to_have_text("Lot INTAKE-0003")
            expect(page.locator(".verdict.bad")).to_be_visible()
            expect(page.locator("table.alternatives tbody tr").first).to_contain_text("64")
            page.wait_for_function(
                "() => { const m = document.querySelector('img.map'); return m && m.complete && m.naturalWidth > 0; }",
                timeout=60_000,
            )
            page.screenshot(path=str(ARTIFACTS / "desk-lot.png"), full_page=True)

            page.check("input[name=decision][value=confirmed_fraud]")
            page.fill("#note", "Delivery note names a farm in Pyrénées-Atlantiques.")
            page.click("#review-form button[type=submit]")
            expect(page.locator(".alert.success")).to_contain_text("Confirmed fraud")
            expect(page.locator(".history")).to_contain_text("Pyrénées-Atlantiques")
            page.screenshot(path=str(ARTIFACTS / "desk-reviewed.png"), full_page=True)
        finally:
            browser.close()

    with session_scope(live_service.runtime.engine) as session:
        reviews = list(session.exec(select(Review).where(Review.verification_id == flagged["id"])))
    assert [(r.decision, r.note) for r in reviews] == [
        ("confirmed_fraud", "Delivery note names a farm in Pyrénées-Atlantiques.")
    ]


def test_intake_key_cannot_open_the_desk_in_a_browser(live_service: LiveService) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page()
            page.goto(f"{live_service.url}/desk/login")
            page.fill("#api_key", live_service.keys["intake"])
            page.click("button[type=submit]")
            expect(page.locator(".alert.error")).to_contain_text("cannot open the auditor's desk")
            page.goto(f"{live_service.url}/desk/")
            expect(page).to_have_url(f"{live_service.url}/desk/login?next=%2Fdesk")
        finally:
            browser.close()
