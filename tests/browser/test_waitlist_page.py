"""The seat picker on a sold-out session: "Join the waiting list for [N] seats", the place in line, and the
offered hold opening the checkout with its countdown, extended once, then bought."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from server.cluster import LocalCluster
from tests.browser.support import Buyer, axe_violations, call, new_session, seat_statuses


def user(base: str) -> dict[str, Any]:
    status, body = call(base, "POST", "/users", {"name": "Holder", "email": f"{uuid.uuid4().hex[:12]}@example.com"})
    assert status == 201, body
    return body  # type: ignore[no-any-return]



def clock_seconds(text: str) -> int:
    """The countdown's "m:ss" in seconds ("10:00" is later than "9:59", which a string comparison gets wrong)."""
    minutes, seconds = text.strip().split(":")
    return int(minutes) * 60 + int(seconds)

def test_sold_out_page_joins_the_waiting_list_and_opens_the_offered_hold(
        cluster: LocalCluster, chromium: Any, shots: Path) -> None:
    base = cluster.url
    session_id = new_session(base, rows=2, seats_per_row=8)
    status, body = call(base, "GET", f"/sessions/{session_id}/seats")
    seats = [s["id"] for s in body["seats"]]
    first, second = user(base), user(base)
    status, released = call(base, "POST", "/reservations", {"sessionId": session_id, "sessionSeatIds": seats[:10]},
                            token=first["token"])
    assert status == 201, released
    status, _ = call(base, "POST", "/reservations", {"sessionId": session_id, "sessionSeatIds": seats[10:]},
                     token=second["token"])
    assert status == 201

    with Buyer(chromium, "A", shots) as a:
        a.open(base, session_id)
        a.page.wait_for_selector('[data-action="waitlist-join"]')
        assert "Sold out" in a.page.locator(".checkout").inner_text()
        a.page.fill("#waitlist-quantity", "2")
        a.page.locator("#waitlist-quantity").dispatch_event("change")
        a.shot("01-sold-out")
        assert axe_violations(a.page) == []
        a.click("waitlist-join")
        a.page.wait_for_selector("text=You are number 1 in line")
        a.page.wait_for_selector('[data-action="waitlist-leave"]')
        a.shot("02-in-line")
        assert axe_violations(a.page) == []

        # seats come back: the first two (in seat order) are held for A, and the checkout opens on them
        status, _ = call(base, "DELETE", f"/reservations/{released['id']}", token=first["token"])
        assert status == 204
        a.wait_state(["A1", "A2"], "mine", timeout=10_000)
        a.page.wait_for_selector(".timer-clock")
        a.page.wait_for_selector("#toasts >> text=Seats came back for you")
        before = a.page.locator(".timer-clock").inner_text()
        a.shot("03-offered")

        # one extension, then the button is gone; the countdown moved on
        a.click("extend")
        a.page.wait_for_selector("#toasts >> text=More time")
        assert a.page.locator('[data-action="extend"]').count() == 0
        assert clock_seconds(a.page.locator(".timer-clock").inner_text()) > clock_seconds(before)
        a.click("buy")
        a.page.wait_for_selector("text=Purchase confirmed")
        a.shot("04-bought")
    statuses = seat_statuses(base, session_id)
    assert statuses["A1"] == statuses["A2"] == "SOLD"


def test_the_place_in_line_moves_up_and_works_on_a_phone(cluster: LocalCluster, chromium: Any, shots: Path) -> None:
    base = cluster.url
    session_id = new_session(base, rows=2, seats_per_row=8)
    status, body = call(base, "GET", f"/sessions/{session_id}/seats")
    seats = [s["id"] for s in body["seats"]]
    holder, ahead = user(base), user(base)
    for part in (seats[:8], seats[8:]):
        assert call(base, "POST", "/reservations", {"sessionId": session_id, "sessionSeatIds": part},
                    token=holder["token"])[0] == 201
    assert call(base, "POST", f"/sessions/{session_id}/waitlist", {"quantity": 9}, token=ahead["token"])[0] == 201

    with Buyer(chromium, "phone", shots, width=360) as phone:
        phone.open(base, session_id)
        phone.page.fill("#waitlist-quantity", "1")
        phone.page.locator("#waitlist-quantity").dispatch_event("change")
        phone.click("waitlist-join")
        phone.page.wait_for_selector("text=You are number 2 in line")
        phone.shot("01-second-in-line")
        assert axe_violations(phone.page) == []
        # the buyer ahead leaves: the page's place moves up without a reload
        assert call(base, "DELETE", f"/sessions/{session_id}/waitlist", token=ahead["token"])[0] == 204
        phone.page.wait_for_selector("text=You are number 1 in line", timeout=20_000)
        phone.click("waitlist-leave")
        phone.page.wait_for_selector('[data-action="waitlist-join"]')


def test_a_buyer_in_line_keeps_their_place_shown_while_fewer_seats_than_asked_are_free(
        cluster: LocalCluster, chromium: Any, shots: Path) -> None:
    """One seat comes back but the buyer waits for two: they are still in line, and the page still says so and
    still lets them leave (it showed the empty "pick seats" panel as soon as any seat was free)."""
    base = cluster.url
    session_id = new_session(base, rows=2, seats_per_row=8)
    status, body = call(base, "GET", f"/sessions/{session_id}/seats")
    seats = [s["id"] for s in body["seats"]]
    one, rest = user(base), user(base)
    status, single = call(base, "POST", "/reservations", {"sessionId": session_id, "sessionSeatIds": seats[:1]},
                          token=one["token"])
    assert status == 201, single
    for part in (seats[1:9], seats[9:]):
        assert call(base, "POST", "/reservations", {"sessionId": session_id, "sessionSeatIds": part},
                    token=rest["token"])[0] == 201

    with Buyer(chromium, "phone", shots, width=360) as phone:
        phone.open(base, session_id)
        phone.page.fill("#waitlist-quantity", "2")
        phone.page.locator("#waitlist-quantity").dispatch_event("change")
        phone.click("waitlist-join")
        phone.page.wait_for_selector("text=You are number 1 in line")
        assert call(base, "DELETE", f"/reservations/{single['id']}", token=one["token"])[0] == 204
        phone.wait_state(["A1"], "available", timeout=10_000)
        phone.page.wait_for_selector("text=You are number 1 in line", timeout=5_000)
        phone.page.wait_for_selector('[data-action="waitlist-leave"]', timeout=5_000)
        phone.shot("01-still-in-line-with-a-seat-free")
        assert axe_violations(phone.page) == []
