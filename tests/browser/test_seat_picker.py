"""The seat picker page in headless Chromium, on a 2-node cluster behind HAProxy.

Two buyers (browser contexts A and B, one desktop-sized and one phone-sized) watch the same session:
live changes, the "just taken" message, a double-clicked Buy that buys once, My tickets, a hold that
expires on both pages, a reload that keeps the hold, and a page whose node is killed under it.
Every step leaves a screenshot in test-output/browser/<test name>/.
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from server.cluster import LocalCluster
from tests.browser.support import HOLD_TTL_SECONDS, Buyer, call, new_session, seat_statuses

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

LIVE_WITHIN_MS = 1000  # the issue: B sees A's hold "within 1 s"


# ------------------------------------------------------------------ tests


def test_two_buyers_see_each_other_live(cluster: LocalCluster, chromium: Any, shots: Path) -> None:
    base = cluster.url
    session_id = new_session(base)
    with Buyer(chromium, "A", shots) as a, Buyer(chromium, "B", shots, width=390) as b:
        a.open(base, session_id)
        b.open(base, session_id)
        a.shot("01-both-open")
        b.shot("01-both-open")
        assert a.page.get_by_role("button", name="Row C, seat 4, available").count() == 1

        a.seat("C4").click()
        a.seat("C5").click()
        assert a.state("C4") == a.state("C5") == "selected"
        assert "$25.00" in a.page.locator(".checkout .total").inner_text()  # 2 x 12.50
        a.shot("02-A-selected")

        a.click("hold")
        a.wait_state(["C4", "C5"], "mine", timeout=5000)
        seen_after_ms = b.wait_state(["C4", "C5"], "other", timeout=LIVE_WITHIN_MS)
        (shots / "live-latency.txt").write_text(f"B saw A's hold {seen_after_ms:.0f} ms after A got hold.ok\n")

        # The hold lasts HOLD_TTL_SECONDS, so only B's picture is taken before buying (A's held page is
        # pictured in test_hold_expires_on_both_pages).
        b.seat("C4").click()
        b.page.wait_for_selector("#toasts >> text=just taken")
        assert b.state("C4") == "other"
        left = a.page.locator(".timer-clock").inner_text()
        assert re.fullmatch(r"0:\d\d", left) and 0 < int(left[2:]) <= HOLD_TTL_SECONDS, left
        b.shot("03-B-just-taken")

        # A double click on Buy buys once: the button is disabled from the first click until the answer.
        a.page.dblclick('[data-action="buy"]')
        b.wait_state(["C4", "C5"], "sold", timeout=5000)
        a.wait_state(["C4", "C5"], "sold", timeout=5000)
        a.page.wait_for_selector(".checkout >> text=You're going!")
        a.shot("04-A-bought")
        b.shot("04-B-sees-sold")

        a.page.click("#tickets-button")
        ticket = a.page.locator("#tickets-dialog .ticket")
        ticket.first.wait_for()
        assert ticket.count() == 1
        text = ticket.first.inner_text()
        assert "The Browser Test" in text and "Seat 4" in text and "Seat 5" in text and "$25.00" in text
        a.shot("05-A-my-tickets")

        guest = a.guest()
        status, purchases = call(base, "GET", f"/users/{guest['id']}/purchases", token=guest["token"])
        assert status == 200 and len(purchases) == 1
        assert sorted(s["seatNumber"] for s in purchases[0]["seats"]) == [4, 5]
        assert seat_statuses(base, session_id)["C4"] == "SOLD"


def test_hold_expires_on_both_pages(cluster: LocalCluster, chromium: Any, shots: Path) -> None:
    base = cluster.url
    session_id = new_session(base)
    with Buyer(chromium, "A", shots) as a, Buyer(chromium, "B", shots) as b:
        a.open(base, session_id)
        b.open(base, session_id)

        # Keyboard only: focus a seat, arrow across, Enter and Space toggle.
        a.seat("B2").focus()
        a.page.keyboard.press("Enter")
        a.page.keyboard.press("ArrowRight")
        a.page.keyboard.press("Space")
        a.page.keyboard.press("ArrowDown")
        assert a.page.evaluate("document.activeElement.getAttribute('aria-label')") == "Row C, seat 3, available"
        assert a.state("B2") == a.state("B3") == "selected"
        a.shot("01-A-keyboard-selected")

        # B is looking at B2 (it has the focus) when A holds it: B's screen reader is told.
        b.seat("B2").focus()
        a.click("hold")
        a.wait_state(["B2", "B3"], "mine", timeout=5000)
        held_at = time.monotonic()
        b.wait_state(["B2", "B3"], "other", timeout=5000)
        b.wait_announced("Row B, seat 2 was just taken by someone else")

        # A reload keeps the guest and the hold: the seats are still A's, with the countdown.
        a.page.reload()
        a.wait_live()
        print(f"reloaded {time.monotonic() - held_at:.2f} s after the hold")
        a.wait_state(["B2", "B3"], "mine", timeout=3000)
        a.page.wait_for_selector(".timer-clock")
        a.page.wait_for_selector('[data-action="buy"]')
        a.shot("02-A-held-after-reload")
        b.shot("02-B-sees-held")

        # Ten seconds before the end A is warned, in words as well as by the red clock.
        a.wait_announced("seconds left to buy Row B, seat 2 and Row B, seat 3", timeout=HOLD_TTL_SECONDS * 1000)

        # Wait out the TTL: both pages show the seats free again, and A is told why.
        a.wait_state(["B2", "B3"], "available", timeout=(HOLD_TTL_SECONDS + 6) * 1000)
        b.wait_state(["B2", "B3"], "available", timeout=6000)
        a.page.wait_for_selector("#toasts >> text=hold expired")
        a.wait_announced("Hold expired. Your hold expired, so Row B, seat 2 and Row B, seat 3 went back on sale")
        a.shot("03-A-expired")
        b.shot("03-B-available-again")
        statuses = seat_statuses(base, session_id)
        assert statuses["B2"] == statuses["B3"] == "AVAILABLE"


def test_page_survives_its_node_being_killed(cluster: LocalCluster, chromium: Any, shots: Path) -> None:
    base = cluster.url
    session_id = new_session(base)
    killed = None
    try:
        with Buyer(chromium, "A", shots) as a:
            # Record every text the connection banner shows: a quick reconnect may hide it before anyone looks.
            a.context.add_init_script("""
                window.bannersShown = [];
                document.addEventListener("DOMContentLoaded", () => {
                  const banner = document.getElementById("banner");
                  new MutationObserver(() => {
                    if (!banner.hidden) window.bannersShown.push(banner.querySelector(".banner-text").textContent);
                  }).observe(banner, { attributes: true, childList: true, subtree: true, characterData: true });
                });
            """)
            a.open(base, session_id)
            node_id = a.node_id()
            assert node_id in cluster.node_ids
            killed = cluster.node_ids.index(node_id)
            a.shot("01-connected")

            cluster.kill_node(killed, sig=signal.SIGKILL)
            a.page.wait_for_selector('body[data-conn="reconnecting"]', timeout=5000)
            # The first retry may already reach the other node: the picture is best effort, the record is not.
            a.shot("02-connection-lost")

            # While A is away, someone holds two seats and buys one (through HAProxy, on the surviving node).
            status, user = call(base, "POST", "/users", {"name": "Other", "email": f"o-{uuid.uuid4()}@x.example"})
            assert status == 201
            _, seats = call(base, "GET", f"/sessions/{session_id}/seats")
            ids = {f"{s['seat']['rowLabel']}{s['seat']['seatNumber']}": s["id"] for s in seats["seats"]}
            two = {"sessionId": session_id, "sessionSeatIds": [ids["D7"], ids["D8"]]}
            status, held = call(base, "POST", "/reservations", two, token=user["token"])
            assert status == 201, held
            one = {"sessionId": session_id, "sessionSeatIds": [ids["E1"]]}
            status, other = call(base, "POST", "/reservations", one, token=user["token"])
            assert status == 201
            status, _ = call(base, "POST", f"/reservations/{other['id']}/confirm", token=user["token"],
                             headers={"Idempotency-Key": str(uuid.uuid4())})
            assert status == 201

            # A reconnects (backoff with jitter) to the surviving node and resyncs from its snapshot.
            a.wait_live(timeout=20_000)
            assert a.node_id() != node_id
            a.wait_state(["D7", "D8"], "other", timeout=3000)
            a.wait_state(["E1"], "sold", timeout=3000)
            a.page.wait_for_selector("#toasts >> text=Reconnected")
            assert any(text.startswith("Connection lost") for text in a.page.evaluate("window.bannersShown"))
            assert a.page.locator("#banner").is_hidden()
            a.shot("03-reconnected")

            expected = {"AVAILABLE": "available", "RESERVED": "other", "SOLD": "sold"}
            truth = {code: expected[s] for code, s in seat_statuses(base, session_id).items()}
            shown = a.page.evaluate(
                "Object.fromEntries([...document.querySelectorAll('button.seat')]"
                ".map((b) => [b.dataset.row + b.dataset.number, b.dataset.state]))")
            assert shown == truth
            assert re.search(r"node-\d", a.page.locator("#node-info").inner_text())
    finally:
        if killed is not None:
            cluster.start_node(killed)
