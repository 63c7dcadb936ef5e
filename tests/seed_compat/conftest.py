"""Fixtures of the StarSoft compatibility tests: a client in either mode, a freshly seeded database."""

from __future__ import annotations

from typing import Any

import pytest

from core.settings import Settings
from server.app import create_app
from storage import db, seed
from tests.conftest import with_settings
from tests.seed_compat.support import Caller


@pytest.fixture(params=["trusting", "tokens"])
async def caller(request: pytest.FixtureRequest, aiohttp_client: Any, settings: Settings) -> Caller:
    tokens = request.param == "tokens"
    app = create_app(with_settings(settings, auth_required=tokens))
    return Caller(await aiohttp_client(app), tokens)



@pytest.fixture
async def fresh_database(empty_database: str) -> str:
    """A database of its own, migrated and seeded as `boxoffice migrate` and `boxoffice seed` leave it."""
    await db.migrate(empty_database)
    await seed.seed(empty_database)
    return empty_database
