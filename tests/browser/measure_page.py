"""Measure the seat picker as a phone loads it: the JavaScript and CSS sent on a first load (bytes on the wire, as
served, and as files) and the time from navigation to the seat map's first paint with the CPU throttled 4x.

Not a test: run it against a running node (`boxoffice dev`), which serves the demo session:
    .venv/bin/python tests/browser/measure_page.py http://127.0.0.1:8080 --runs 7
`--static DIR` serves the page and its files from DIR instead (uncompressed, as a node without compression
would), so another version of the page can be measured against the same node.
"""

from __future__ import annotations

import argparse
import json
import statistics
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Route, sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DEMO_MOVIE = "Interstellar (IMAX re-release)"  # storage/seed.py
CPU_SLOWDOWN = 4

# The seat map's first paint, from the browser's own Element Timing of the first row label, which is marked the
# moment the map enters the document (before it is painted); the same for any version of the page.
PAINT_PROBE = """
window.seatMapPaint = null;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) if (entry.identifier === "seatmap") window.seatMapPaint = entry.renderTime;
}).observe({ type: "element", buffered: true });
new MutationObserver((_, observer) => {
  const label = document.querySelector(".seatmap .row-label");
  if (!label) return;
  observer.disconnect();
  label.setAttribute("elementtiming", "seatmap");
}).observe(document, { childList: true, subtree: true });
"""


def serve_from(folder: Path) -> Any:
    def handle(route: Route) -> None:
        path = route.request.url.split("?", 1)[0].split("/", 3)[3]
        if path.startswith("static/"):
            route.fulfill(path=str(folder / path.removeprefix("static/")))
        else:
            route.fulfill(path=str(folder / "index.html"))
    return handle


def one_load(browser: Any, url: str, static: Path | None) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True,
                                  device_scale_factor=3)
    page = context.new_page()
    if static is not None:
        page.route("**/", serve_from(static))
        page.route("**/?session=*", serve_from(static))
        page.route("**/static/**", serve_from(static))
    cdp = context.new_cdp_session(page)
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": CPU_SLOWDOWN})
    page.add_init_script(PAINT_PROBE)
    finished: list[Any] = []
    page.on("requestfinished", lambda request: finished.append(request))
    page.goto(url, wait_until="commit", timeout=120_000)
    page.wait_for_function("window.seatMapPaint !== null", timeout=120_000)
    page.wait_for_load_state("load", timeout=120_000)
    painted = page.evaluate("window.seatMapPaint")
    sizes = {"paint_ms": painted, "wire_script": 0, "wire_stylesheet": 0, "file_script": 0, "file_stylesheet": 0}
    for request in finished:
        kind = request.resource_type
        if kind in ("script", "stylesheet"):
            sizes[f"wire_{kind}"] += request.sizes()["responseBodySize"]
            sizes[f"file_{kind}"] += len(request.response().body())
    context.close()
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", nargs="?", default="http://127.0.0.1:8080")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--static", type=Path, default=None, help="serve the page from this folder")
    args = parser.parse_args()
    with urllib.request.urlopen(f"{args.base}/sessions") as resp:  # noqa: S310 - a local node
        sessions = json.load(resp)
    session_id = next((s["id"] for s in sessions if s["movieTitle"] == DEMO_MOVIE), sessions[0]["id"])
    url = f"{args.base}/?session={session_id}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        one_load(browser, url, args.static)  # warm-up: the node's first requests and the browser's own start
        runs = [one_load(browser, url, args.static) for _ in range(args.runs)]
        browser.close()
    last = runs[-1]
    paints = sorted(r["paint_ms"] for r in runs)
    print(f"page: {url}" + (f" (files from {args.static})" if args.static else ""))
    print(f"JS + CSS on the wire: {(last['wire_script'] + last['wire_stylesheet']) / 1024:.1f} KiB "
          f"(JS {last['wire_script'] / 1024:.1f}, CSS {last['wire_stylesheet'] / 1024:.1f}); "
          f"as files {(last['file_script'] + last['file_stylesheet']) / 1024:.1f} KiB")
    print(f"first seat-map paint, CPU {CPU_SLOWDOWN}x slower, 360 px phone: median {statistics.median(paints):.0f} ms "
          f"over {len(paints)} loads (min {paints[0]:.0f}, max {paints[-1]:.0f})")


if __name__ == "__main__":
    main()
