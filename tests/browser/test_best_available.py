"""Best available seats, presence and the no-orphan hint in the seat picker, as a phone buyer (touch, 360 px)
and a desktop buyer meet them, in the demo's room shape (10 rows of 16). Pictured in
test-output/browser/<test name>/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.cluster import LocalCluster
from tests.browser.support import Buyer, axe_violations, new_session, seat_statuses
from tests.browser.test_phone import CONTROL_PX, SMALL_CONTROLS

pytestmark = [pytest.mark.browser, pytest.mark.cluster]


def watching(buyer: Buyer, count: int) -> None:
    text = "Only you are watching" if count == 1 else f"{count} people watching"
    buyer.page.wait_for_selector(f'.watchers:not([hidden]) >> text="{text}"', timeout=10_000)


@pytest.mark.timeout(240)
def test_phone_buyer_holds_the_best_3_seats_and_the_picker_warns_of_a_stranded_seat(
        cluster: LocalCluster, chromium: Any, shots: Path) -> None:
    base = cluster.url
    session_id = new_session(base, rows=10, seats_per_row=16)
    with Buyer(chromium, "phone", shots, width=360) as phone, Buyer(chromium, "desktop", shots) as desk:
        phone.open(base, session_id)
        desk.open(base, session_id)
        watching(phone, 2)  # the two of them, on whichever nodes HAProxy sent them to
        watching(desk, 2)

        # "Best available: − 2 +" and its button, every part a 44 px target on the touch screen
        control = phone.page.locator(".best-available")
        control.wait_for()
        assert phone.page.locator('[data-role="best-quantity"]').inner_text() == "2"
        assert phone.page.evaluate(SMALL_CONTROLS, CONTROL_PX) == []
        assert axe_violations(phone.page) == []
        phone.shot("01-best-available")
        phone.click("best-more")
        assert phone.page.locator('[data-role="best-quantity"]').inner_text() == "3"
        assert phone.page.locator('[data-action="best-available"]').inner_text() == "Hold the best 3 seats"
        phone.click("best-available")

        # the middle of the middle rows, side by side: E7-E9 (docs/beyond.md, the scoring)
        phone.wait_state(["E7", "E8", "E9"], "mine", timeout=10_000)
        desk.wait_state(["E7", "E8", "E9"], "other", timeout=10_000)
        assert phone.page.locator(".checkout .chip").count() == 3
        phone.shot("02-held")
        desk.shot("02-sees-them-held")

        # the desktop buyer picks E5: E6 would be left alone between E5 and E7, and the picker says so first
        desk.pick("E5")
        hint = desk.page.locator('[data-role="orphan-hint"]')
        hint.wait_for()
        assert "E6" in hint.inner_text()
        desk.shot("03-orphan-hint")
        desk.click("hold")  # a warning, not a refusal: the seat is held and the hold's answer warns too
        desk.wait_state(["E5"], "mine", timeout=10_000)
        desk.page.wait_for_selector('[data-role="orphan-hint"] >> text=Your hold leaves E6')
        desk.shot("04-held-with-warning")

        statuses = seat_statuses(base, session_id)
        assert {code for code, status in statuses.items() if status == "RESERVED"} == {"E5", "E7", "E8", "E9"}
