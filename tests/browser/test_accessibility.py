"""axe-core (WCAG 2.0-2.2 A and AA, best practices) finds nothing on the seat picker at phone, tablet and desktop
widths: the session list, the seat map, a hold in progress and a purchase (My tickets: in test_phone.py).
Every state is pictured in test-output/browser/<test name>/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.cluster import LocalCluster
from tests.browser.support import HOLD_TTL_SECONDS, Buyer, axe_violations, new_session

pytestmark = [pytest.mark.browser, pytest.mark.cluster]


@pytest.mark.timeout(240)  # four states, four axe runs: minutes when the machine is busy
@pytest.mark.parametrize("width", [360, 390, 768, 1280])
def test_no_accessibility_violations(cluster: LocalCluster, chromium: Any, shots: Path, width: int) -> None:
    base = cluster.url
    session_id = new_session(base, rows=10, seats_per_row=16)
    found: dict[str, list[str]] = {}
    with Buyer(chromium, str(width), shots, width=width) as buyer:
        page = buyer.page
        page.goto(f"{base}/")
        page.wait_for_selector(".session-card:not(.skeleton)")
        page.wait_for_load_state("networkidle")  # the free-seat counts are filled in after the cards
        found["session list"] = axe_violations(page)
        buyer.shot("1-session-list")

        buyer.open(base, session_id)
        found["seat map"] = axe_violations(page)
        buyer.shot("2-seat-map")

        buyer.pick("J16")
        buyer.pick("J15")
        buyer.click("hold")
        buyer.wait_state(["J15", "J16"], "mine", timeout=5000)
        found["hold in progress"] = axe_violations(page)
        buyer.shot("3-hold")
        # axe may take longer than a hold lasts on a busy machine: the purchase is made with a fresh hold.
        page.evaluate("document.querySelector('[data-action=\"release\"]')?.click()")  # unless it expired
        buyer.wait_state(["J15", "J16"], "available", timeout=(HOLD_TTL_SECONDS + 5) * 1000)

        buyer.pick("J14")
        buyer.click("hold")
        buyer.wait_state(["J14"], "mine", timeout=5000)
        buyer.click("buy")
        page.wait_for_selector(".checkout >> text=You're going!")
        buyer.wait_state(["J14"], "sold", timeout=5000)
        found["purchase"] = axe_violations(page)
        buyer.shot("4-purchase")
    problems = {state: lines for state, lines in found.items() if lines}
    assert not problems, "\n".join(f"{state}: {line}" for state, lines in problems.items() for line in lines)
