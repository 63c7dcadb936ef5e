"""The seat picker as a phone buyer meets it: Chromium with touch emulation at 360 and 320 px, in the demo's
room shape (10 rows of 16, so seat 16 of row J is the far corner). Every step is pictured in
test-output/browser/<test name>/."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from server.cluster import LocalCluster
from tests.browser.support import Buyer, axe_violations, call, new_session, seat_selector, seat_statuses

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

ROWS, SEATS = 10, 16
TARGET_PX = 24  # WCAG 2.2 target size (2.5.8)
CONTROL_PX = 44  # every other control on a touch screen

# Where a seat is and whether a buyer can see it: inside the map's visible part and the screen, right of the
# row labels that stay in view, and not covered (the point at its centre is the seat itself).
SEAT_VIEW = """(sel) => {
  const b = document.querySelector(sel);
  const r = b.getBoundingClientRect();
  const frame = b.closest('.seatmap-scroll').getBoundingClientRect();
  const label = b.closest('.seat-row').querySelector('.row-label').getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  const across = r.left >= Math.max(frame.left, label.right, 0) - 0.5
    && r.right <= Math.min(frame.right, innerWidth) + 0.5;
  const seen = across && r.top >= 0 && r.bottom <= innerHeight && !!hit && b.contains(hit);
  return {x: r.left + r.width / 2, y: r.top + r.height / 2, width: r.width, height: r.height, seen};
}"""
# Every seat's box, and how many of them lie across the screen's width (inside the map's visible part).
ALL_SEATS = """() => {
  const frame = document.querySelector('.seatmap-scroll').getBoundingClientRect();
  const boxes = [...document.querySelectorAll('button.seat')].map((b) => b.getBoundingClientRect());
  const from = Math.max(frame.left, 0) - 0.5;
  const to = Math.min(frame.right, innerWidth) + 0.5;
  return {
    count: boxes.length,
    across: boxes.filter((r) => r.left >= from && r.right <= to).length,
    smallest: [Math.min(...boxes.map((r) => r.width)), Math.min(...boxes.map((r) => r.height))],
  };
}"""
# Visible controls other than seats (a visually hidden skip link is 1 px and not counted) with their sizes.
# Measured once every finite animation has ended (a dialog opens from scale(0.98): 44 px reads 43.1 mid-way).
SMALL_CONTROLS = """async (min) => {
  await Promise.all(document.getAnimations().filter((a) => isFinite(a.effect?.getTiming().iterations ?? 1))
    .map((a) => a.finished.catch(() => null)));
  return [...document.querySelectorAll('button:not(.seat), a[href], [role="button"]')]
  .map((el) => ({el, r: el.getBoundingClientRect()}))
  .filter(({el, r}) => r.width > 1 && r.height > 1 && getComputedStyle(el).visibility !== 'hidden')
  .filter(({r}) => r.width < min - 0.5 || r.height < min - 0.5)
  .map(({el, r}) => ({name: el.getAttribute('aria-label') || el.textContent.trim(), w: r.width, h: r.height})); }"""
# The middle of the part of the map on screen: where two fingers pinch.
MAP_MIDDLE = """() => { const r = document.querySelector('.seatmap-scroll').getBoundingClientRect();
  const top = Math.max(r.top, 0); const bottom = Math.min(r.bottom, innerHeight);
  return [r.left + r.width / 2, (top + bottom) / 2]; }"""


def seat_view(buyer: Buyer, code: str) -> dict[str, Any]:
    return dict(buyer.page.evaluate(SEAT_VIEW, seat_selector(code)))


def bring_row_into_view(buyer: Buyer, code: str) -> None:
    """Scroll the page (not the map) so the seat's row is mid-screen, as a thumb would."""
    buyer.page.evaluate("(sel) => window.scrollBy(0, document.querySelector(sel).getBoundingClientRect().top"
                        " - innerHeight / 2)", seat_selector(code))


def tap_seen(buyer: Buyer, code: str) -> dict[str, Any]:
    """Tap a seat where the buyer sees it (at its centre on the screen, no scrolling by the test tool)."""
    view = seat_view(buyer, code)
    assert view["seen"], f"{code} is not visible: {view}"
    buyer.page.touchscreen.tap(view["x"], view["y"])
    return view


@pytest.mark.timeout(240)  # two contexts, a dozen pictures and an axe run: minutes when the machine is busy
def test_phone_buyer_taps_j16_holds_and_buys(cluster: LocalCluster, chromium: Any, shots: Path) -> None:
    base = cluster.url
    session_id = new_session(base, rows=ROWS, seats_per_row=SEATS)
    with Buyer(chromium, "phone", shots, width=360) as phone, Buyer(chromium, "desktop", shots) as other:
        phone.open(base, session_id)
        other.open(base, session_id)

        # The whole room fits the screen as an overview: all 16 seats of every row are in view.
        assert phone.map_mode() == "overview"
        overview = phone.page.evaluate(ALL_SEATS)
        assert overview["count"] == ROWS * SEATS and overview["across"] == ROWS * SEATS, overview
        phone.shot("01-overview")

        # A tap on J16 zooms in there: J16 stays under the thumb, now a target of 24 px or more, not yet picked.
        bring_row_into_view(phone, "J16")
        before = tap_seen(phone, "J16")
        assert before["width"] < TARGET_PX
        phone.page.wait_for_selector('.seatmap-frame[data-mode="pick"]')
        zoomed = seat_view(phone, "J16")
        assert zoomed["seen"], zoomed
        assert zoomed["width"] >= TARGET_PX and zoomed["height"] >= TARGET_PX, zoomed
        assert abs(zoomed["x"] - before["x"]) < zoomed["width"] and abs(zoomed["y"] - before["y"]) < zoomed["height"]
        assert phone.state("J16") == "available"
        assert phone.page.evaluate(ALL_SEATS)["smallest"] >= [TARGET_PX, TARGET_PX]
        phone.shot("02-zoomed-in-on-j16")

        phone.page.wait_for_timeout(400)  # a person's next tap, past the double-tap window
        tap_seen(phone, "J16")
        assert phone.state("J16") == "selected"
        phone.click("hold")
        phone.wait_state(["J16"], "mine", timeout=5000)
        other.wait_state(["J16"], "other", timeout=5000)
        phone.shot("03-held")
        other.shot("03-sees-j16-held")

        # On a touch screen every control is at least 44 x 44 px.
        assert phone.page.evaluate(SMALL_CONTROLS, CONTROL_PX) == []

        phone.click("buy")
        phone.page.wait_for_selector(".checkout >> text=You're going!")
        phone.wait_state(["J16"], "sold", timeout=5000)
        other.wait_state(["J16"], "sold", timeout=5000)
        phone.shot("04-bought")
        other.shot("04-sees-j16-sold")

        phone.press(phone.page.locator("#tickets-button"))
        phone.page.locator("#tickets-dialog .ticket").first.wait_for()
        assert "Seat 16" in phone.page.locator("#tickets-dialog .ticket").first.inner_text()
        assert phone.page.evaluate(SMALL_CONTROLS, CONTROL_PX) == []
        assert axe_violations(phone.page) == []
        phone.shot("05-my-tickets")

        guest = phone.guest()
        status, purchases = call(base, "GET", f"/users/{guest['id']}/purchases", token=guest["token"])
        assert status == 200 and [(s["rowLabel"], s["seatNumber"]) for s in purchases[0]["seats"]] == [("J", 16)]
        statuses = seat_statuses(base, session_id)
        assert statuses["J16"] == "SOLD" and list(statuses.values()).count("SOLD") == 1


def touch(cdp: Any, kind: str, points: list[tuple[float, float]], at: float | None = None) -> None:
    """A touch event; `at` (epoch seconds) is when the finger moved, as the page's event.timeStamp sees it."""
    fingers = [{"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)]
    event: dict[str, Any] = {"type": kind, "touchPoints": fingers}
    if at is not None:
        event["timestamp"] = at
    cdp.send("Input.dispatchTouchEvent", event)


def pinch(buyer: Buyer, cdp: Any, start: float, end: float, steps: int = 6) -> None:
    """Two fingers across the middle of the map, moving from `start` px apart to `end` px apart."""
    x, y = buyer.page.evaluate(MAP_MIDDLE)
    for i in range(steps + 1):
        spread = start + (end - start) * i / steps
        touch(cdp, "touchStart" if i == 0 else "touchMove", [(x - spread / 2, y), (x + spread / 2, y)])
    touch(cdp, "touchEnd", [])


def test_phone_zoom_and_pan_change_what_is_in_reach(cluster: LocalCluster, chromium: Any, shots: Path) -> None:
    base = cluster.url
    session_id = new_session(base, rows=ROWS, seats_per_row=SEATS)
    with Buyer(chromium, "phone", shots, width=320) as phone:
        page = phone.page
        phone.open(base, session_id)
        bring_row_into_view(phone, "E8")
        assert phone.map_mode() == "overview"
        assert page.evaluate(ALL_SEATS)["across"] == ROWS * SEATS
        phone.shot("01-overview-320")

        # The + button zooms in: seats become targets, and only part of each row is in view, which the map says.
        phone.press(page.locator('[data-map="in"]'))
        assert phone.map_mode() == "pick"
        zoomed = page.evaluate(ALL_SEATS)
        assert zoomed["smallest"] >= [TARGET_PX, TARGET_PX]
        assert 0 < zoomed["across"] < ROWS * SEATS
        assert page.get_attribute(".seatmap-frame", "data-more-right") == "true"
        assert "of 16 in view" in page.locator(".map-hint").inner_text()
        assert not seat_view(phone, "E16")["seen"]
        phone.shot("02-zoomed-in")

        # The arrow button pans right until the row's end is in view; the row labels stay on screen.
        for _ in range(4):
            if page.get_attribute(".seatmap-frame", "data-more-right") != "true":
                break
            phone.press(page.locator('[data-map="right"]'))
            page.wait_for_timeout(600)  # a smooth scroll
        assert seat_view(phone, "E16")["seen"]
        label = page.evaluate("""() => { const l = document.querySelectorAll('.row-label:not(.row-label-end)')[4];
          const r = l.getBoundingClientRect();
          const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
          return {text: l.textContent, seen: r.left >= 0 && l.contains(hit)}; }""")
        assert label == {"text": "E", "seen": True}
        assert "16 of 16 in view" in page.locator(".map-hint").inner_text()
        phone.shot("03-panned-right")

        # Fingers pinching together go back to the whole room; spreading them zooms in again.
        cdp = phone.context.new_cdp_session(page)
        pinch(phone, cdp, 200, 40)
        page.wait_for_selector('.seatmap-frame[data-mode="overview"]')
        assert page.evaluate(ALL_SEATS)["across"] == ROWS * SEATS
        pinch(phone, cdp, 40, 160)
        page.wait_for_selector('.seatmap-frame[data-mode="pick"]')
        assert 0 < page.evaluate(ALL_SEATS)["across"] < ROWS * SEATS
        assert page.evaluate(ALL_SEATS)["smallest"] >= [TARGET_PX, TARGET_PX]
        phone.shot("04-pinched-in")

        # A double tap on the map's background (here row E's label, which stays in view) goes back to the whole
        # room; nothing was picked by any of it.
        label_at = page.evaluate("""() => {
          const r = document.querySelectorAll('.seat-row')[4].querySelector('.row-label').getBoundingClientRect();
          return [r.left + r.width / 2, r.top + r.height / 2]; }""")
        page.wait_for_timeout(400)  # a person's pause after the pinch
        # Two taps 200 ms apart by their timestamps, however slowly a busy machine delivers them.
        first = time.time()
        for tap in (first, first + 0.2):
            touch(cdp, "touchStart", [label_at], at=tap)
            touch(cdp, "touchEnd", [], at=tap + 0.05)
        page.wait_for_selector('.seatmap-frame[data-mode="overview"]')
        assert page.locator('button.seat[data-state="selected"]').count() == 0
        phone.shot("05-double-tapped-out")
