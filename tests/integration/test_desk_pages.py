"""The auditor's desk over HTTP (no browser): login and sessions, the queue's filters, a lot's evidence,
and decisions recorded through the same review service and audit log as the API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from service_support import Service, bootstrap_reference, claim, make_world, start_service
from sqlmodel import select

from grainproof.store.audit import verify_chain
from grainproof.store.database import session_scope
from grainproof.store.tables import AuditEntry, Review

#: (lot id, true origin, declared origin, intake key): genuine and false claims from two sites.
LOTS = (
    ("desk-genuine", "51", "51", "intake"),
    ("desk-far", "64", "51", "intake"),
    ("desk-other-site", "29", "02", "intake2"),
)


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, dict[str, Any]]]]:
    client, runtime, keys = start_service(tmp_path_factory.mktemp("desk") / "data")
    world = make_world()
    with client:
        model_id = bootstrap_reference(client, keys, world)
        service = Service(client=client, runtime=runtime, keys=keys, world=world, model_id=model_id)
        rng = np.random.default_rng(3)
        views = {}
        for lot_id, true_origin, declared, role in LOTS:
            body = {"claim": claim(lot_id, region=declared), "vectors": world.vector("apache", true_origin, 2024, rng)}
            response = client.post("/v1/verifications", json=body, headers=service.headers(role))
            assert response.status_code == 201, response.text
            views[lot_id] = response.json()
        yield service, views


def _login(service: Service, role: str = "auditor") -> Any:
    client = service.client
    client.cookies.clear()
    return client.post("/desk/login", data={"api_key": service.keys[role], "next": "/desk/"}, follow_redirects=False)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "every desk page with a form carries a CSRF token"
    return match.group(1)


def test_pages_without_a_session_redirect_to_login(desk: Any) -> None:
    service, views = desk
    service.client.cookies.clear()
    for path in ("/desk/", f"/desk/lots/{views['desk-far']['id']}", f"/desk/lots/{views['desk-far']['id']}/map.png"):
        response = service.client.get(path, follow_redirects=False)
        assert response.status_code == 302, path
        assert response.headers["location"].startswith("/desk/login?next=")


def test_service_root_leads_to_the_desk(desk: Any) -> None:
    service, _ = desk
    response = service.client.get("/", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == "/desk/"


def test_login_sets_an_httponly_session_cookie_and_returns_to_the_page(desk: Any) -> None:
    service, _ = desk
    response = _login(service)
    assert response.status_code == 303 and response.headers["location"] == "/desk/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/desk" in cookie
    assert service.keys["auditor"] not in cookie, "the cookie never carries the API key itself"


def test_intake_and_unknown_keys_cannot_log_in(desk: Any) -> None:
    service, _ = desk
    intake = _login(service, "intake")
    assert intake.status_code == 401 and "cannot open the auditor&#39;s desk" in intake.text
    unknown = service.client.post("/desk/login", data={"api_key": "gp_not-a-key"}, follow_redirects=False)
    assert unknown.status_code == 401 and "unknown or revoked" in unknown.text
    assert "set-cookie" not in intake.headers and "set-cookie" not in unknown.headers


def test_login_never_redirects_off_the_desk(desk: Any) -> None:
    service, _ = desk
    service.client.cookies.clear()
    response = service.client.post(
        "/desk/login",
        data={"api_key": service.keys["auditor"], "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/desk/"


def test_queue_shows_open_flagged_lots_and_filters_by_site(desk: Any) -> None:
    service, _ = desk
    _login(service)
    page = service.client.get("/desk/").text
    assert "desk-far" in page and "desk-other-site" in page
    assert "desk-genuine" not in page, "the default queue holds flagged lots only"
    everything = service.client.get("/desk/", params={"flagged": "all", "status": "all"}).text
    assert "desk-genuine" in everything
    silo = service.client.get("/desk/", params={"site": "silo-2"}).text
    assert "desk-other-site" in silo and "desk-far" not in silo


def test_queue_filters_by_date(desk: Any) -> None:
    service, views = desk
    _login(service)
    day = views["desk-far"]["created_at"][:10]
    assert "desk-far" in service.client.get("/desk/", params={"date_from": day, "date_to": day}).text
    assert "desk-far" not in service.client.get("/desk/", params={"date_to": "2000-01-01"}).text
    bad = service.client.get("/desk/", params={"date_from": "yesterday"})
    assert bad.status_code == 422 and "YYYY-MM-DD" in bad.text


def test_lot_page_shows_the_evidence(desk: Any) -> None:
    service, views = desk
    _login(service)
    view = views["desk-far"]
    page = service.client.get(f"/desk/lots/{view['id']}").text
    assert "Lot desk-far" in page and "Flagged" in page
    assert "51 Marne" in page, "the declared origin is named, not just coded"
    assert "64 Pyrénées-Atlantiques" in page, "the true origin shows among the alternatives"
    for reason in view["verdict"]["reasons"]:
        assert reason.split(";")[0] in page
    for nearest in view["verdict"]["nearest_reference_lots"]:
        assert nearest["lot_id"] in page


def test_lot_map_is_a_png_drawn_once(desk: Any) -> None:
    service, views = desk
    _login(service)
    path = f"/desk/lots/{views['desk-far']['id']}/map.png"
    first = service.client.get(path)
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content.startswith(b"\x89PNG")
    assert service.client.get(path).content == first.content


def test_decision_from_the_desk_is_stored_and_chained_in_the_audit_log(desk: Any) -> None:
    service, views = desk
    _login(service)
    view = views["desk-other-site"]
    page = service.client.get(f"/desk/lots/{view['id']}").text
    entries_before = service.count(AuditEntry)
    response = service.client.post(
        f"/desk/lots/{view['id']}/reviews",
        data={"csrf_token": _csrf(page), "decision": "false_alarm", "note": "Seed certificate checks out."},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"].endswith("?recorded=false_alarm")
    with session_scope(service.runtime.engine) as session:
        reviews = list(session.exec(select(Review).where(Review.verification_id == view["id"])))
        assert [(r.decision, r.note) for r in reviews] == [("false_alarm", "Seed certificate checks out.")]
        assert verify_chain(session).ok
    assert service.count(AuditEntry) == entries_before + 1
    shown = service.client.get(response.headers["location"]).text
    assert "Decision recorded" in shown and "Seed certificate checks out." in shown
    assert "test auditor" in shown, "the history names who decided"
    api_view = service.client.get(f"/v1/verifications/{view['id']}", headers=service.headers("auditor")).json()
    assert api_view["status"] == "reviewed" and api_view["decision"] == "false_alarm"


def test_decision_without_the_form_token_is_refused(desk: Any) -> None:
    service, views = desk
    _login(service)
    view = views["desk-far"]
    before = service.count(Review)
    response = service.client.post(
        f"/desk/lots/{view['id']}/reviews", data={"csrf_token": "forged", "decision": "confirmed_fraud"}
    )
    assert response.status_code == 400 and "reload the page" in response.text
    assert service.count(Review) == before


def test_bad_decision_is_explained_and_not_stored(desk: Any) -> None:
    service, views = desk
    _login(service)
    view = views["desk-far"]
    page = service.client.get(f"/desk/lots/{view['id']}").text
    before = service.count(Review)
    response = service.client.post(
        f"/desk/lots/{view['id']}/reviews",
        data={"csrf_token": _csrf(page), "decision": "confirmed_fraud", "promote_to_reference": "yes"},
    )
    assert response.status_code == 422 and "promoted into the reference" in response.text
    assert service.count(Review) == before


def test_revoking_the_key_ends_its_desk_session(desk: Any) -> None:
    from grainproof.store.keys import create_key, revoke_key

    service, _ = desk
    with session_scope(service.runtime.engine) as session:
        key, secret = create_key(session, role="auditor", name="short-lived")
        key_id = key.id
    service.client.cookies.clear()
    service.client.post("/desk/login", data={"api_key": secret}, follow_redirects=False)
    assert service.client.get("/desk/", follow_redirects=False).status_code == 200
    with session_scope(service.runtime.engine) as session:
        assert key_id is not None
        revoke_key(session, key_id)
    assert service.client.get("/desk/", follow_redirects=False).status_code == 302


def test_desk_pages_load_nothing_from_other_sites(desk: Any) -> None:
    service, views = desk
    _login(service)
    for path in ("/desk/", f"/desk/lots/{views['desk-far']['id']}", "/desk/login"):
        response = service.client.get(path)
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert not re.search(r'(src|href)="(https?:)?//', response.text), path
    assert service.client.get("/desk/static/desk.css").status_code == 200
    assert service.client.get("/desk/static/desk.js").status_code == 200


def test_desk_is_not_part_of_the_api_description(desk: Any) -> None:
    service, _ = desk
    schema = service.client.get("/schema/openapi.json", headers=service.headers("auditor")).json()
    assert not [path for path in schema["paths"] if path.startswith("/desk") or path == "/"]


def test_photos_come_from_the_content_hash_store_behind_the_session(desk: Any, tmp_path: Any) -> None:
    from PIL import Image

    from grainproof.demo import attach_reference_photos
    from grainproof.domain import Claim, LotRecord, Origin

    service, views = desk
    view = views["desk-far"]
    nearest = view["verdict"]["nearest_reference_lots"][0]["lot_id"]
    Image.new("RGB", (80, 60), (180, 140, 60)).save(tmp_path / "tray.jpg", format="JPEG")
    reference = LotRecord(
        claim=Claim(lot_id=nearest, species="soft_wheat", variety="apache", origin=Origin(region="64")),
        photos=("tray.jpg",),
    )
    assert attach_reference_photos(service.runtime, [reference], base_dir=tmp_path) == 1
    digest = service.runtime.photos.put((tmp_path / "tray.jpg").read_bytes())
    _login(service)
    page = service.client.get(f"/desk/lots/{view['id']}").text
    assert f"/desk/photos/{digest}" in page, "the nearest reference lot shows its photo"
    photo = service.client.get(f"/desk/photos/{digest}")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content == (tmp_path / "tray.jpg").read_bytes()
    assert service.client.get(f"/desk/photos/{'0' * 64}").status_code == 404
    assert service.client.get("/desk/photos/not-a-hash").status_code == 404
    service.client.cookies.clear()
    assert service.client.get(f"/desk/photos/{digest}", follow_redirects=False).status_code == 302


def test_unknown_lot_is_a_page_that_says_so(desk: Any) -> None:
    service, _ = desk
    _login(service)
    response = service.client.get("/desk/lots/no-such-verification")
    assert response.status_code == 404 and "No verification with id" in response.text
    assert response.headers["content-type"].startswith("text/html")


def test_logout_ends_the_session(desk: Any) -> None:
    service, _ = desk
    _login(service)
    page = service.client.get("/desk/").text
    response = service.client.post("/desk/logout", data={"csrf_token": _csrf(page)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/desk/login"
    assert 'grainproof_desk=""' in response.headers["set-cookie"] or "Max-Age=0" in response.headers["set-cookie"]
    service.client.cookies.clear()
    assert service.client.get("/desk/", follow_redirects=False).status_code == 302


def test_decision_posted_after_the_session_expired_returns_to_the_lot_after_login(desk: Any) -> None:
    service, views = desk
    service.client.cookies.clear()
    view = views["desk-far"]
    response = service.client.post(
        f"/desk/lots/{view['id']}/reviews", data={"decision": "inconclusive"}, follow_redirects=False
    )
    assert response.status_code == 302
    assert response.headers["location"] == f"/desk/login?next=%2Fdesk%2Flots%2F{view['id']}"
