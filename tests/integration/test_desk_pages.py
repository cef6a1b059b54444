"""The auditor's desk over HTTP (no browser): named accounts and sessions, the queue's filters, order and
export, a lot's evidence, and decisions recorded through the same review service and audit log as the API,
under the four-eyes rule."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from service_support import (
    DESK_USERS,
    Service,
    bootstrap_reference,
    claim,
    create_desk_users,
    make_world,
    reference_photos,
    start_service,
    store_photo_verification,
)
from sqlmodel import delete, select

from grainproof.store.audit import verify_chain
from grainproof.store.database import session_scope
from grainproof.store.tables import AuditEntry, LoginFailure, Review
from synthetic_trays import jpeg_bytes, tray_photo

#: (lot id, true origin, declared origin, intake key): genuine and false claims from two sites.
LOTS = (
    ("desk-genuine", "51", "51", "intake"),
    ("desk-far", "64", "51", "intake"),
    ("desk-other-site", "29", "02", "intake2"),
    ("desk-genuine-2", "10", "10", "intake"),
    ("desk-far-2", "80", "29", "intake"),
)
#: A lot with three photos taken without the calibration card (stored like a photo intake; see service_support).
PHOTO_LOT = "desk-photos"


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, dict[str, Any]]]]:
    client, runtime, keys = start_service(tmp_path_factory.mktemp("desk") / "data")
    create_desk_users(runtime)
    world = make_world()
    with client:
        model_id = bootstrap_reference(client, keys, world, photos=reference_photos())
        service = Service(client=client, runtime=runtime, keys=keys, world=world, model_id=model_id)
        rng = np.random.default_rng(3)
        views = {}
        for lot_id, true_origin, declared, role in LOTS:
            body = {"claim": claim(lot_id, region=declared), "vectors": world.vector("apache", true_origin, 2024, rng)}
            response = client.post("/v1/verifications", json=body, headers=service.headers(role))
            assert response.status_code == 201, response.text
            views[lot_id] = response.json()
        photos = {f"tray-{i}.jpg": jpeg_bytes(tray_photo(seed=40 + i, card=False)) for i in range(3)}
        photo_id = store_photo_verification(runtime, views["desk-far"]["id"], lot_id=PHOTO_LOT, photos=photos)
        views[PHOTO_LOT] = client.get(f"/v1/verifications/{photo_id}", headers=service.headers("auditor")).json()
        yield service, views


def _login(service: Service, username: str = "alice", password: str | None = None) -> Any:
    client = service.client
    client.cookies.clear()
    return client.post(
        "/desk/login",
        data={"username": username, "password": password or DESK_USERS[username][0], "next": "/desk/"},
        follow_redirects=False,
    )


@pytest.fixture()
def no_failed_logins(desk: Any) -> Iterator[None]:
    """The login throttle's counts start and end empty (every request of the TestClient has one address)."""
    service, _ = desk

    def forget() -> None:
        with session_scope(service.runtime.engine) as session:
            session.exec(delete(LoginFailure))  # type: ignore[call-overload]

    forget()
    yield
    forget()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "every desk page with a form carries a CSRF token"
    return match.group(1)


def test_pages_without_a_session_redirect_to_login(desk: Any) -> None:
    service, views = desk
    service.client.cookies.clear()
    for path in (
        "/desk/",
        "/desk/queue.csv",
        f"/desk/lots/{views['desk-far']['id']}",
        f"/desk/lots/{views['desk-far']['id']}/map.png",
        "/desk/no-such-page",
    ):
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
    assert DESK_USERS["alice"][0] not in cookie, "the cookie never carries the password"


def test_wrong_password_and_unknown_user_cannot_log_in(desk: Any, no_failed_logins: None) -> None:
    service, _ = desk
    wrong = _login(service, "alice", "not-alices-password")
    unknown = _login(service, "mallory", "whatever-password-1")
    for response in (wrong, unknown):
        assert response.status_code == 401 and "Wrong username or password" in response.text
        assert "set-cookie" not in response.headers


def test_api_keys_do_not_open_the_desk(desk: Any, no_failed_logins: None) -> None:
    """Auditors log in as named people; an auditor API key pasted into the login form opens nothing."""
    service, _ = desk
    service.client.cookies.clear()
    response = service.client.post("/desk/login", data={"api_key": service.keys["auditor"]}, follow_redirects=False)
    assert response.status_code == 401 and "set-cookie" not in response.headers
    assert service.client.get("/desk/", follow_redirects=False).status_code == 302


def test_login_is_refused_after_repeated_failures_for_one_username(desk: Any, no_failed_logins: None) -> None:
    from grainproof.store.users import MAX_FAILURES_PER_USERNAME

    service, _ = desk
    for _ in range(MAX_FAILURES_PER_USERNAME):
        assert _login(service, "bob", "guess-guess-guess").status_code == 401
    refused = _login(service, "bob")  # even the right password, until the window has passed
    assert refused.status_code == 429 and "Too many failed logins for this username" in refused.text
    assert int(refused.headers["retry-after"]) > 0 and "set-cookie" not in refused.headers
    assert _login(service, "alice").status_code == 303, "another username from the same address still logs in"


def test_login_is_refused_after_repeated_failures_from_one_address(desk: Any, no_failed_logins: None) -> None:
    from grainproof.store.users import MAX_FAILURES_PER_ADDRESS

    service, _ = desk
    for n in range(MAX_FAILURES_PER_ADDRESS):
        assert _login(service, f"guess{n}", "guess-guess-guess").status_code == 401
    refused = _login(service, "alice")
    assert refused.status_code == 429 and "from your address" in refused.text


def test_login_never_redirects_off_the_desk(desk: Any) -> None:
    service, _ = desk
    service.client.cookies.clear()
    password, _ = DESK_USERS["alice"]
    response = service.client.post(
        "/desk/login",
        data={"username": "alice", "password": password, "next": "https://evil.example/"},
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
        assert [(r.decision, r.note, r.reviewer_user) for r in reviews] == [
            ("false_alarm", "Seed certificate checks out.", "alice")
        ]
        entry = session.exec(select(AuditEntry).where(AuditEntry.record_id == reviews[0].id)).one()
        assert json.loads(entry.payload_json)["reviewer_user"] == "alice", "the audit log names the auditor"
        assert verify_chain(session).ok
    assert service.count(AuditEntry) == entries_before + 1
    shown = service.client.get(response.headers["location"]).text
    assert "Decision recorded" in shown and "Seed certificate checks out." in shown
    assert "alice" in shown, "the history names who decided"
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


def test_disabling_an_account_ends_its_desk_session_and_its_logins(desk: Any, no_failed_logins: None) -> None:
    from grainproof.store.users import create_user, disable_user

    service, _ = desk
    with session_scope(service.runtime.engine) as session:
        create_user(session, username="short-lived", password="short-lived-password")
    assert _login(service, "short-lived", "short-lived-password").status_code == 303
    assert service.client.get("/desk/", follow_redirects=False).status_code == 200
    with session_scope(service.runtime.engine) as session:
        disable_user(session, "short-lived")
    assert service.client.get("/desk/", follow_redirects=False).status_code == 302
    again = _login(service, "short-lived", "short-lived-password")
    assert again.status_code == 403 and "disabled" in again.text


def test_a_new_password_ends_the_sessions_of_the_old_one(desk: Any) -> None:
    from grainproof.store.users import create_user, set_password

    service, _ = desk
    with session_scope(service.runtime.engine) as session:
        create_user(session, username="rotating", password="first-password-here")
    assert _login(service, "rotating", "first-password-here").status_code == 303
    with session_scope(service.runtime.engine) as session:
        set_password(session, "rotating", "second-password-here")
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


def test_reference_lots_imported_with_photos_show_them_from_the_content_hash_store(desk: Any) -> None:
    service, views = desk
    view = views["desk-far"]
    nearest = view["verdict"]["nearest_reference_lots"][0]["lot_id"]
    stored = service.client.get(f"/v1/reference-lots/{nearest}", headers=service.headers("auditor")).json()
    assert len(stored["photos"]) == 1, "the manifest's photo was stored on import"
    digest = stored["photos"][0]
    _login(service)
    page = service.client.get(f"/desk/lots/{view['id']}").text
    assert f"/desk/photos/{digest}" in page, "the nearest reference lot shows its photo"
    assert '<div class="no-photo">' not in page, "every nearest reference lot shows its photo"
    photo = service.client.get(f"/desk/photos/{digest}")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
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


def _record(service: Service, verification_id: str, decision: str, note: str = "") -> Any:
    page = service.client.get(f"/desk/lots/{verification_id}").text
    return service.client.post(
        f"/desk/lots/{verification_id}/reviews",
        data={"csrf_token": _csrf(page), "decision": decision, "note": note},
        follow_redirects=False,
    )


def _queue_lots(html: str) -> list[str]:
    return re.findall(r'class="lot-link" href="[^"]+">([^<]+)</a>', html)


def test_sample_photos_sit_beside_the_verdict_before_the_map(desk: Any) -> None:
    """The sample's photos are the decisive evidence: on the first screen with the verdict, not under the map."""
    service, views = desk
    _login(service)
    page = service.client.get(f"/desk/lots/{views[PHOTO_LOT]['id']}").text
    first_screen = page[page.index('class="first-screen"') : page.index('class="columns"')]
    assert "Photos of the sample" in first_screen and "Plausibility (origin and season)" in first_screen
    for digest in views[PHOTO_LOT]["photos"]:
        assert f'<img src="/desk/photos/{digest}"' in first_screen
    assert page.index("Photos of the sample") < page.index('class="map"')


def test_a_photo_warning_repeated_for_every_photo_is_shown_once(desk: Any) -> None:
    service, views = desk
    warnings = views[PHOTO_LOT]["verdict"]["warnings"]
    card = [w for w in warnings if "no calibration card" in w]
    assert len(card) == 3, "each of the three photos was taken without the card"
    _login(service)
    page = service.client.get(f"/desk/lots/{views[PHOTO_LOT]['id']}").text
    assert page.count("no calibration card found") == 1
    assert "3 photos: tray-0.jpg, tray-1.jpg, tray-2.jpg" in page


def test_alternatives_table_shows_only_informative_rows(desk: Any) -> None:
    from grainproof.api.desk.pages import MIN_ALTERNATIVE_POSTERIOR

    service, views = desk
    _login(service)
    for lot_id in ("desk-far", "desk-genuine"):
        view = views[lot_id]
        verdict = view["verdict"]
        alternatives = verdict["alternatives"]
        informative = [
            a for a in alternatives if a["probability"] >= MIN_ALTERNATIVE_POSTERIOR or a["p_value"] > verdict["alpha"]
        ]
        page = service.client.get(f"/desk/lots/{view['id']}").text
        table = page[page.index("Alternative origins and seasons") : page.index("Record a decision")]
        assert table.count("<tr><td>") == len(informative), lot_id
        hidden = len(alternatives) - len(informative)
        if hidden:
            assert f"{hidden} other" in table and "not shown" in table
    far = views["desk-far"]["verdict"]["alternatives"]
    assert len(far) == 5 and any(a["probability"] < MIN_ALTERNATIVE_POSTERIOR for a in far), (
        "the far-origin lot has uninformative alternatives for this test to mean anything"
    )


def test_model_is_shown_by_name_version_and_date(desk: Any) -> None:
    service, views = desk
    _login(service)
    view = views["desk-far"]
    model = service.client.get(f"/v1/reference-models/{service.model_id}", headers=service.headers("admin")).json()
    page = service.client.get(f"/desk/lots/{view['id']}").text
    facts = page[page.index("<dt>Reference model</dt>") : page.index("</dl>")]
    assert "Reference model 1" in facts, "builds are named by number"
    assert "version <code" in facts and view["model_version"] in facts
    assert f"built {model['finished_at'][:10]}" in facts and f"{model['lot_count']} reference lots" in facts


def test_history_numbers_decisions_forwards_and_names_each_auditor(desk: Any) -> None:
    service, views = desk
    view = views["desk-genuine-2"]
    _login(service, "alice")
    assert _record(service, view["id"], "inconclusive", "First look: cannot tell.").status_code == 303
    _login(service, "bob")
    assert _record(service, view["id"], "confirmed_genuine", "Seed certificate checks out.").status_code == 303
    page = service.client.get(f"/desk/lots/{view['id']}").text
    history = page[page.index('<ol class="history">') : page.index("</ol>")]
    assert history.index("First look") < history.index("Seed certificate"), "1 = the first decision"
    assert history.index("alice") < history.index("bob")


def test_reviewed_view_includes_unflagged_lots_an_auditor_reviewed(desk: Any) -> None:
    service, views = desk
    assert not views["desk-genuine-2"]["flagged"]
    _login(service)
    if views["desk-genuine-2"]["id"] not in service.client.get("/desk/", params={"status": "reviewed"}).text:
        _record(service, views["desk-genuine-2"]["id"], "confirmed_genuine", "Checked.")
    reviewed = _queue_lots(service.client.get("/desk/", params={"status": "reviewed"}).text)
    assert "desk-genuine-2" in reviewed, "a reviewed lot is part of the desk's record, flagged or not"
    assert "desk-genuine" not in reviewed, "unreviewed unflagged lots stay out"
    assert "desk-genuine-2" not in _queue_lots(service.client.get("/desk/").text), "the open queue stays flagged"


def test_queue_sorts_by_plausibility_and_by_received_date(desk: Any) -> None:
    service, views = desk
    _login(service)
    every = {"status": "all", "flagged": "all"}
    by_p = sorted((v for k, v in views.items() if k != PHOTO_LOT), key=lambda v: (v["plausibility"], v["created_at"]))
    least = _queue_lots(service.client.get("/desk/", params={**every, "sort": "least_plausible"}).text)
    shown_p = [next(v["plausibility"] for v in views.values() if v["lot_id"] == lot) for lot in least]
    assert shown_p == sorted(shown_p) and len(least) == len(views)
    most = _queue_lots(service.client.get("/desk/", params={**every, "sort": "most_plausible"}).text)
    assert [next(v["plausibility"] for v in views.values() if v["lot_id"] == lot) for lot in most] == sorted(
        shown_p, reverse=True
    )
    assert by_p[0]["plausibility"] == shown_p[0]
    newest = _queue_lots(service.client.get("/desk/", params=every).text)
    oldest = _queue_lots(service.client.get("/desk/", params={**every, "sort": "oldest"}).text)
    assert oldest == newest[::-1] and newest[0] == PHOTO_LOT
    bad = service.client.get("/desk/", params={"sort": "sideways"})
    assert bad.status_code == 422 and "least_plausible" in bad.text


def test_csv_export_holds_the_filtered_queue_in_its_order(desk: Any) -> None:
    service, views = desk
    _login(service)
    params = {"status": "all", "flagged": "all", "sort": "least_plausible", "site": "silo-2"}
    response = service.client.get("/desk/queue.csv", params=params)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["lot_id"] for r in rows] == ["desk-other-site"], "the same filters as the page"
    every = {"status": "all", "flagged": "all", "sort": "least_plausible"}
    exported = list(csv.DictReader(io.StringIO(service.client.get("/desk/queue.csv", params=every).text)))
    assert [r["lot_id"] for r in exported] == _queue_lots(service.client.get("/desk/", params=every).text)
    far = next(r for r in exported if r["lot_id"] == "desk-far")
    assert float(far["plausibility"]) == views["desk-far"]["plausibility"] and far["flagged"] == "yes"
    assert far["declared_origin"] == "51" and far["declared_origin_name"] == "51 Marne"
    assert far["received"].endswith("+00:00"), "times carry their offset"
    page = service.client.get("/desk/", params=every).text
    assert "/desk/queue.csv?status=all&amp;flagged=all&amp;sort=least_plausible" in page


def test_times_are_shown_in_the_browsers_zone_with_the_zone_named(desk: Any) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    service, views = desk
    _login(service)
    view = views["desk-far"]
    received = datetime.fromisoformat(view["created_at"])
    utc_page = service.client.get(f"/desk/lots/{view['id']}").text
    assert received.strftime("%Y-%m-%d %H:%M UTC") in utc_page and "times in UTC" in utc_page
    service.client.cookies.set("grainproof_tz", "Asia%2FTokyo", path="/desk")
    tokyo = service.client.get(f"/desk/lots/{view['id']}").text
    assert received.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M JST") in tokyo
    assert "times in Asia/Tokyo" in tokyo
    service.client.cookies.set("grainproof_tz", "Not/AZone", path="/desk")
    assert "times in UTC" in service.client.get("/desk/").text, "an unknown zone falls back to UTC"


def test_not_found_pages_keep_the_navigation(desk: Any) -> None:
    service, _ = desk
    _login(service)
    for path in ("/desk/lots/no-such-verification", "/desk/no-such-page"):
        response = service.client.get(path)
        assert response.status_code == 404 and response.headers["content-type"].startswith("text/html"), path
        assert '<nav class="account">' in response.text and "alice" in response.text, path
        assert "Log out" in response.text


def test_four_eyes_a_contradicting_decision_needs_a_note_and_a_second_auditor(desk: Any) -> None:
    service, views = desk
    view = views["desk-far-2"]
    _login(service, "alice")
    assert _record(service, view["id"], "false_alarm", "Looked fine to me.").status_code == 303
    own = _record(service, view["id"], "confirmed_fraud", "Changed my mind.")
    assert own.status_code == 409 and "second auditor" in own.text and "four-eyes" in own.text
    assert "Back to the lot" in own.text
    _login(service, "bob")
    silent = _record(service, view["id"], "confirmed_fraud")
    assert silent.status_code == 409 and "needs a note" in silent.text
    agreeing = _record(service, view["id"], "inconclusive")
    assert agreeing.status_code == 303, "inconclusive contradicts nothing"
    second = _record(service, view["id"], "confirmed_fraud", "Delivery note names a farm in the Somme.")
    assert second.status_code == 303
    with session_scope(service.runtime.engine) as session:
        reviews = list(
            session.exec(select(Review).where(Review.verification_id == view["id"]).order_by(Review.created_at))
        )
        assert [(r.decision, r.reviewer_user) for r in reviews] == [
            ("false_alarm", "alice"),
            ("inconclusive", "bob"),
            ("confirmed_fraud", "bob"),
        ]
        assert reviews[-1].overrides == reviews[0].id
        entry = session.exec(select(AuditEntry).where(AuditEntry.record_id == reviews[-1].id)).one()
        assert json.loads(entry.payload_json)["overrides"] == reviews[0].id, "the audit log vouches for it"
        assert verify_chain(session).ok
    page = service.client.get(f"/desk/lots/{view['id']}").text
    assert "Overrides decision 1" in page


def test_four_eyes_holds_for_the_api_too(desk: Any) -> None:
    service, views = desk
    view = views["desk-far"]
    url = f"/v1/verifications/{view['id']}/reviews"
    first = service.client.post(url, json={"decision": "confirmed_fraud"}, headers=service.headers("auditor"))
    assert first.status_code == 201, first.text
    own = service.client.post(
        url, json={"decision": "false_alarm", "note": "Oops."}, headers=service.headers("auditor")
    )
    assert own.status_code == 409 and "second auditor" in own.json()["detail"]
    silent = service.client.post(url, json={"decision": "false_alarm"}, headers=service.headers("admin"))
    assert silent.status_code == 409 and "needs a note" in silent.json()["detail"]
    second = service.client.post(
        url,
        json={"decision": "false_alarm", "note": "The farm is in the Marne after all."},
        headers=service.headers("admin"),
    )
    assert second.status_code == 201 and second.json()["overrides"] == first.json()["id"]


def test_queue_filters_by_the_check_that_flagged_the_lot(desk: Any) -> None:
    service, views = desk
    # A lot of rubisko declared as apache: its variety check flags it.
    body = {
        "claim": claim("desk-swap", region="51"),
        "vectors": service.world.vector("rubisko", "51", 2024, np.random.default_rng(9)),
    }
    response = service.client.post("/v1/verifications", json=body, headers=service.headers("intake"))
    assert response.status_code == 201, response.text
    swap = response.json()
    assert "variety" in swap["verdict"]["flagged_checks"], swap["verdict"]
    # Two checks ran, so the verdict also says how rare their smaller p-value is, and it is at or below alpha.
    assert swap["verdict"]["checks_plausibility"] <= swap["verdict"]["alpha"]
    _login(service)
    page = service.client.get(f"/desk/lots/{swap['id']}").text
    assert "Origin and variety checks together" in page
    by_variety = service.client.get("/desk/", params={"check": "variety", "status": "all"}).text
    assert "desk-swap" in by_variety
    # The far lot is there exactly when its variety check flagged too (judged at a false declared origin, a true
    # variety can look wrong; its reason then says so).
    far = service.client.get(f"/v1/verifications/{views['desk-far']['id']}", headers=service.headers("auditor"))
    assert ("desk-far" in by_variety) == ("variety" in far.json()["verdict"]["flagged_checks"])
    assert "desk-far" in service.client.get("/desk/", params={"check": "origin_season", "status": "all"}).text
    assert "desk-swap" not in service.client.get("/desk/", params={"check": "purity", "status": "all"}).text
    assert 'option value="variety" selected' in by_variety
    bad = service.client.get("/desk/", params={"check": "colour"})
    assert bad.status_code == 422 and "origin_season, variety, purity" in bad.text
