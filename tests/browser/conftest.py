"""Fixtures of the browser tests: one 2-node cluster behind HAProxy for every browser test module of a run
(each test makes its own session, so they share it safely) and one headless Chromium per module."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.cluster import LOAD_TEST_LIMITS, LocalCluster
from server.embedded import EmbeddedStack
from tests.browser.support import ADMIN_TOKEN, CHROMIUM, CHROMIUM_ARGS, HOLD_TTL_SECONDS, SCREENS
from tests.cluster_support import all_nodes_up, haproxy_binary

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="package")  # ends with the browser tests: its relays must not publish later tests' rows
def browser_cluster(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two real nodes and HAProxy on the session's PostgreSQL, Redis and Kafka, with short holds."""
    haproxy_binary()
    env = {**stack.urls, "ADMIN_TOKEN": ADMIN_TOKEN,  # type: ignore[attr-defined]
           "HOLD_TTL_SECONDS": str(HOLD_TTL_SECONDS), "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", **LOAD_TEST_LIMITS}
    with LocalCluster(2, env=env, state_dir=tmp_path_factory.mktemp("browser-cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One browser per module: Playwright's sync API runs an event loop of its own, which must be gone before
    the asyncio tests of later modules start theirs."""
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
