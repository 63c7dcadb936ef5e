"""Retake the README screenshots (docs/seat-picker.png, docs/seat-picker-phone*.png) from a running node.

Not a test: run it against `boxoffice dev` (demo data), after making the map look lived-in:
    .venv/bin/python tests/browser/readme_screenshots.py http://127.0.0.1:8080
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
DEMO_MOVIE = "Interstellar (IMAX re-release)"  # storage/seed.py


def seat(page: object, code: str) -> object:
    return page.locator(f'button.seat[data-row="{code[0]}"][data-number="{code[1:]}"]')  # type: ignore[attr-defined]


def main(base: str) -> None:
    with urllib.request.urlopen(f"{base}/sessions") as resp:  # noqa: S310 - a local node
        sessions = json.load(resp)
    # the demo screening (10 rows x 16 seats) if it is there, else the first one
    session_id = next((s["id"] for s in sessions if s["movieTitle"] == DEMO_MOVIE), sessions[0]["id"])
    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)

        desktop = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
        desktop.goto(f"{base}/?session={session_id}")
        desktop.wait_for_selector('body[data-conn="live"]')
        for code in ("G10", "G11", "G12"):
            seat(desktop, code).click()  # type: ignore[attr-defined]
        desktop.click('[data-action="hold"]')
        desktop.wait_for_selector('[data-action="buy"]')
        desktop.wait_for_timeout(2600)
        for close in desktop.locator(".toast-close").all():
            close.click()
        desktop.wait_for_timeout(400)
        desktop.screenshot(path=str(DOCS / "seat-picker.png"))
        desktop.click('[data-action="release"]')

        # A 360 px phone: the whole room as an overview, then zoomed in where the buyer tapped, two seats picked.
        phone = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2, is_mobile=True,
                                    has_touch=True).new_page()
        phone.goto(f"{base}/?session={session_id}")
        phone.wait_for_selector('body[data-conn="live"]')
        phone.evaluate("window.scrollBy(0, document.querySelector('.stage').getBoundingClientRect().top - 60)")
        phone.wait_for_timeout(300)
        phone.screenshot(path=str(DOCS / "seat-picker-phone-overview.png"))
        seat(phone, "I8").tap()  # type: ignore[attr-defined]  # zooms in around I8
        phone.wait_for_timeout(500)
        for code in ("I7", "I8"):
            seat(phone, code).tap()  # type: ignore[attr-defined]
        phone.wait_for_timeout(400)
        phone.screenshot(path=str(DOCS / "seat-picker-phone.png"))
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080")
