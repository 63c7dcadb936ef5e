"""The seat picker page in headless Chromium, on a 2-node cluster behind HAProxy.

Two buyers (browser contexts A and B, one desktop-sized and one phone-sized) watch the same session:
live changes, the "just taken" message, a double-clicked Buy that buys once, My tickets, a hold that
expires on both pages, a reload that keeps the hold, and a page whose node is killed under it.
Every step leaves a screenshot in test-output/browser/<test name>/.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server.cluster import LOAD_TEST_LIMITS, LocalCluster
from server.embedded import EmbeddedStack
from tests.cluster_support import all_nodes_up, haproxy_binary
from tests.conftest import OUTPUT

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ADMIN_TOKEN = "browser-admin-token"
HOLD_TTL_SECONDS = 8  # long enough to buy (or reload) within it on a loaded machine, short enough to wait out
LIVE_WITHIN_MS = 1000  # the issue: B sees A's hold "within 1 s"
SCREENS = OUTPUT / "browser"

playwright_sync = pytest.importorskip("playwright.sync_api")


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def browser_cluster(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two real nodes and HAProxy on the session's PostgreSQL, Redis and Kafka, with short holds."""
    haproxy_binary()
    env = {**stack.urls, "ADMIN_TOKEN": ADMIN_TOKEN,  # type: ignore[attr-defined]
           "HOLD_TTL_SECONDS": str(HOLD_TTL_SECONDS), "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", **LOAD_TEST_LIMITS}
    with LocalCluster(2, env=env, state_dir=tmp_path_factory.mktemp("browser-cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def cluster(browser_cluster: LocalCluster) -> LocalCluster:
    """The cluster with both nodes up and routed (the node-kill test restarts what it killed)."""
    return all_nodes_up(browser_cluster)


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Path:
    folder = SCREENS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


# ------------------------------------------------------------------ helpers


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


def new_session(base: str) -> str:
    """A fresh room (6 rows x 10 seats) and session, so every test starts from an empty map."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    room_body = {"name": f"Browser {uuid.uuid4().hex[:6]}", "rows": 6, "seatsPerRow": 10}
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


class Buyer:
    """One browser context on the seat picker, with the selectors a user would look at."""

    def __init__(self, browser: Any, name: str, shots: Path, *, phone: bool = False) -> None:
        options: dict[str, Any] = {"viewport": {"width": 1280, "height": 900}}
        if phone:
            options = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
        self.context = browser.new_context(**options)
        self.page = self.context.new_page()
        self.name = name
        self.shots = shots
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def open(self, base: str, session_id: str) -> None:
        self.page.goto(f"{base}/?session={session_id}")
        self.wait_live()

    def wait_live(self, timeout: float = 15_000) -> None:
        self.page.wait_for_selector('body[data-conn="live"] button.seat', timeout=timeout)

    def seat(self, code: str) -> Any:
        row, number = code[0], code[1:]
        return self.page.locator(f'button.seat[data-row="{row}"][data-number="{number}"]')

    def state(self, code: str) -> str:
        return str(self.seat(code).get_attribute("data-state"))

    def wait_state(self, codes: list[str], state: str, timeout: float) -> float:
        """Wait until every seat shows `state`; returns the milliseconds it took."""
        selectors = [f'button.seat[data-row="{c[0]}"][data-number="{c[1:]}"]' for c in codes]
        started = time.perf_counter()
        self.page.wait_for_function(
            "([sels, state]) => sels.every((s) => document.querySelector(s)?.dataset.state === state)",
            arg=[selectors, state], timeout=timeout, polling="raf")
        return (time.perf_counter() - started) * 1000

    def click(self, action: str) -> None:
        self.page.click(f'[data-action="{action}"]')

    def toasts(self) -> str:
        return str(self.page.locator("#toasts").inner_text())

    def guest(self) -> dict[str, str]:
        return json.loads(self.page.evaluate("localStorage.getItem('boxoffice.guest')"))

    def node_id(self) -> str:
        return str(self.page.get_attribute("body", "data-node-id"))

    def shot(self, step: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{step}-{self.name}.png"))

    def __enter__(self) -> Buyer:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:  # closing after a failure: keep what the page showed
            self.page.screenshot(path=str(self.shots / f"failure-{self.name}.png"), full_page=True)
        self.context.close()
        assert self.errors == [], f"{self.name}: JavaScript errors {self.errors}"


# ------------------------------------------------------------------ tests


def test_two_buyers_see_each_other_live(cluster: LocalCluster, chromium: Any, shots: Path) -> None:
    base = cluster.url
    session_id = new_session(base)
    with Buyer(chromium, "A", shots) as a, Buyer(chromium, "B", shots, phone=True) as b:
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
        assert a.page.locator(".timer-clock").inner_text().startswith("0:0")
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

        a.click("hold")
        a.wait_state(["B2", "B3"], "mine", timeout=5000)
        held_at = time.monotonic()
        b.wait_state(["B2", "B3"], "other", timeout=5000)

        # A reload keeps the guest and the hold: the seats are still A's, with the countdown.
        a.page.reload()
        a.wait_live()
        print(f"reloaded {time.monotonic() - held_at:.2f} s after the hold")
        a.wait_state(["B2", "B3"], "mine", timeout=3000)
        a.page.wait_for_selector(".timer-clock")
        a.page.wait_for_selector('[data-action="buy"]')
        a.shot("02-A-held-after-reload")
        b.shot("02-B-sees-held")

        # Wait out the TTL: both pages show the seats free again, and A is told why.
        a.wait_state(["B2", "B3"], "available", timeout=(HOLD_TTL_SECONDS + 6) * 1000)
        b.wait_state(["B2", "B3"], "available", timeout=6000)
        a.page.wait_for_selector("#toasts >> text=hold expired")
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
