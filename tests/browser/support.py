"""Helpers of the browser tests: the REST calls they set up with, a buyer's browser context, and axe-core."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OUTPUT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ADMIN_TOKEN = "browser-admin-token"
# Long enough to buy (or reload) within it on a loaded machine and to cross the page's 10-second warning,
# short enough to wait out.
HOLD_TTL_SECONDS = 15
SCREENS = OUTPUT / "browser"
# What a buyer's screen is at each width the tests use: phones are touch screens.
VIEWPORTS = {320: 640, 360: 740, 390: 844, 768: 1024, 1280: 900}
TOUCH_BELOW = 700

AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def call(base: str, method: str, path: str, body: Any = None, token: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, method=method, headers=sent, data=data)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def new_session(base: str, rows: int = 6, seats_per_row: int = 10) -> str:
    """A fresh room and session, so every test starts from an empty map."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    room_body = {"name": f"Browser {uuid.uuid4().hex[:6]}", "rows": rows, "seatsPerRow": seats_per_row}
    status, room = call(base, "POST", "/rooms", room_body, headers=admin)
    assert status == 201, room
    start = datetime.now(UTC) + timedelta(days=2)
    status, session = call(base, "POST", "/sessions", {
        "movieTitle": "The Browser Test", "startShowTime": start.isoformat(),
        "endShowTime": (start + timedelta(hours=2)).isoformat(), "roomId": room["id"], "ticketPrice": 12.5,
    }, headers=admin)
    assert status == 201, session
    return str(session["id"])


def seat_statuses(base: str, session_id: str) -> dict[str, str]:
    status, body = call(base, "GET", f"/sessions/{session_id}/seats")
    assert status == 200
    return {f"{s['seat']['rowLabel']}{s['seat']['seatNumber']}": s["status"] for s in body["seats"]}


def seat_selector(code: str) -> str:
    return f'button.seat[data-row="{code[0]}"][data-number="{code[1:]}"]'


class Buyer:
    """One browser context on the seat picker, with the selectors a user would look at. Below 700 px wide it
    is a phone: touch screen, mobile viewport, 3 device pixels per CSS pixel."""

    def __init__(self, browser: Any, name: str, shots: Path, *, width: int = 1280) -> None:
        self.touch = width < TOUCH_BELOW
        options: dict[str, Any] = {"viewport": {"width": width, "height": VIEWPORTS.get(width, 900)}}
        if self.touch:
            options.update(is_mobile=True, has_touch=True, device_scale_factor=3)
        self.context = browser.new_context(**options)
        self.page = self.context.new_page()
        self.name = name
        self.shots = shots
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def open(self, base: str, session_id: str) -> None:
        self.page.goto(f"{base}/?session={session_id}")
        self.wait_live()

    def wait_live(self, timeout: float = 30_000) -> None:
        self.page.wait_for_selector('body[data-conn="live"] button.seat', timeout=timeout)

    def seat(self, code: str) -> Any:
        return self.page.locator(seat_selector(code))

    def state(self, code: str) -> str:
        return str(self.seat(code).get_attribute("data-state"))

    def map_mode(self) -> str:
        """fit (the room fits with seats big enough to hit), overview (zoomed out) or pick (zoomed in)."""
        return str(self.page.get_attribute(".seatmap-frame", "data-mode"))

    def press(self, target: Any) -> None:
        """A tap on a touch screen, a click elsewhere."""
        if self.touch:
            target.tap()
        else:
            target.click()

    def pick(self, code: str) -> None:
        """Pick a seat as a buyer does: on a zoomed-out map the first tap zooms in there, the next one picks."""
        if self.map_mode() == "overview":
            self.press(self.seat(code))
            self.page.wait_for_selector('.seatmap-frame[data-mode="pick"]')
            self.page.wait_for_timeout(400)  # past the double-tap window, as a person's next tap is
        self.press(self.seat(code))

    def wait_state(self, codes: list[str], state: str, timeout: float) -> float:
        """Wait until every seat shows `state`; returns the milliseconds it took."""
        selectors = [seat_selector(c) for c in codes]
        started = time.perf_counter()
        self.page.wait_for_function(
            "([sels, state]) => sels.every((s) => document.querySelector(s)?.dataset.state === state)",
            arg=[selectors, state], timeout=timeout, polling="raf")
        return (time.perf_counter() - started) * 1000

    def click(self, action: str) -> None:
        self.press(self.page.locator(f'[data-action="{action}"]'))

    def toasts(self) -> str:
        return str(self.page.locator("#toasts").inner_text())

    def wait_announced(self, words: str, timeout: float = 5000) -> None:
        """Wait until the screen-reader live regions have said something containing `words`."""
        self.page.wait_for_function(
            "(words) => [...document.querySelectorAll('.announcer p')].some((p) => p.textContent.includes(words))",
            arg=words, timeout=timeout)

    def guest(self) -> dict[str, str]:
        return json.loads(self.page.evaluate("localStorage.getItem('boxoffice.guest')"))

    def node_id(self) -> str:
        return str(self.page.get_attribute("body", "data-node-id"))

    def shot(self, step: str) -> None:
        # CSS pixels: a phone's 3x device pixels would make each picture nine times the work
        self.page.screenshot(path=str(self.shots / f"{step}-{self.name}.png"), scale="css")

    def __enter__(self) -> Buyer:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:  # closing after a failure: keep what the page showed
            self.page.screenshot(path=str(self.shots / f"failure-{self.name}.png"), full_page=True, scale="css")
        self.context.close()
        assert self.errors == [], f"{self.name}: JavaScript errors {self.errors}"


def axe_violations(page: Any) -> list[str]:
    """Run axe-core on the page as it is (WCAG 2.x A and AA, 2.2 AA, best practices): one line per violation."""
    if not AXE.exists():
        pytest.fail(f"axe-core is missing ({AXE}): `make install` installs it (npm ci in tests/browser)")
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(path=str(AXE))
    violations = page.evaluate(
        "(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})"
        ".then((r) => r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.map((n) => n.target.join(' '))})))",
        AXE_TAGS)
    return [f"{v['id']} ({v['impact']}): {v['help']} at {', '.join(v['nodes'][:5])}" for v in violations]
