"""The seat picker waits in line with the buyer, in headless Chromium on a 2-node cluster behind HAProxy.

Two buyers open a session whose waiting room admits one buyer every few seconds: the first to join is
admitted first; the second sees "You are number N in line", its number fall, and then the seat map opens by
itself, and the hold it makes there carries its admission.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from server.cluster import LocalCluster

try:  # the helpers and fixtures of the page's tests: tests/browser/support.py and conftest.py where they exist
    from tests.browser.support import ADMIN_TOKEN, Buyer, call, new_session  # type: ignore[import-not-found]
except ImportError:  # ... else beside the seat picker's own tests
    from tests.browser.test_seat_picker import ADMIN_TOKEN, Buyer, call, new_session
    from tests.browser.test_seat_picker import browser_cluster as browser_cluster  # noqa: F401 - a fixture
    from tests.browser.test_seat_picker import chromium as chromium  # noqa: F401 - a fixture
    from tests.browser.test_seat_picker import cluster as cluster  # noqa: F401 - a fixture
    from tests.browser.test_seat_picker import shots as shots  # noqa: F401 - a fixture

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

RATE = 0.1  # buyers admitted per second while the browsers load: one every 10 s
FAST_RATE = 1.0  # then one a second: slow enough to watch a place fall
AHEAD = 5  # buyers in line before the browsers: at RATE, 50 s to load both pages


def map_open(buyer: Buyer) -> bool:
    return bool(buyer.page.evaluate(
        "() => !document.querySelector('main').hasAttribute('data-waiting')"
        " && !!document.querySelector('button.seat') && document.querySelector('.waiting-room')?.hidden === true"))


def place_text(buyer: Buyer) -> str:
    place = buyer.page.locator('[data-testid="queue-place"]')
    return str(place.inner_text()) if place.count() and place.is_visible() else ""


@pytest.mark.timeout(300)
def test_two_buyers_wait_in_line_and_the_first_to_join_gets_the_map_first(
        cluster: LocalCluster, chromium: Any, shots: Path) -> None:
    base = cluster.url
    session_id = new_session(base)
    status, body = call(base, "PUT", f"/sessions/{session_id}/queue", {"enabled": True, "rate": RATE},
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status == 200, body
    for n in range(AHEAD):  # buyers ahead, joined over the API: the browsers have time to load in line
        status, user = call(base, "POST", "/users", {"name": f"Ahead {n}", "email": f"{uuid.uuid4().hex}@example.com"})
        assert status == 201, user
        assert call(base, "POST", f"/sessions/{session_id}/queue", token=user["token"])[0] == 200
    with Buyer(chromium, "A", shots) as a, Buyer(chromium, "B", shots) as b:
        a.page.goto(f"{base}/?session={session_id}")
        a.page.wait_for_selector('[data-testid="queue-place"]', timeout=30_000)
        b.page.goto(f"{base}/?session={session_id}")
        b.page.wait_for_selector('[data-testid="queue-place"]', timeout=30_000)
        b.shot("01-B-in-line")
        assert b.page.get_by_role("progressbar").count() == 1
        assert b.page.locator('[aria-live="polite"][data-testid="queue-announcer"]').count() == 1
        # both wait in line; now the line moves faster
        status, body = call(base, "PUT", f"/sessions/{session_id}/queue", {"enabled": True, "rate": FAST_RATE},
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 200, body

        opened: dict[str, float] = {}
        b_texts: list[str] = [place_text(b)]
        deadline = time.monotonic() + 60
        while len(opened) < 2:
            assert time.monotonic() < deadline, (opened, b_texts)
            for name, buyer in (("A", a), ("B", b)):
                if name not in opened and map_open(buyer):
                    opened[name] = time.monotonic()
            text = place_text(b)
            if text and (not b_texts or b_texts[-1] != text):
                b_texts.append(text)
            time.sleep(0.1)
        b.shot("02-B-admitted")

        assert opened["A"] < opened["B"]
        numbers = [int(t.split("number ")[1].split(" ")[0].replace(",", "")) for t in b_texts]
        assert numbers[0] >= 2 and numbers == sorted(numbers, reverse=True) and len(set(numbers)) >= 2, b_texts
        assert all("in line · " in t for t in b_texts), b_texts

        # the map that opened takes holds: the socket holds with B's admission
        b.seat("A1").click()
        b.click("hold")
        b.wait_state(["A1"], "mine", timeout=15_000)
        b.shot("03-B-holds")
