"""Secure defaults: no known secret, no private embedded stack by accident, no public metrics."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.exceptions
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.settings import Settings
from server.app import create_app
from server.embedded import EmbeddedStack, free_port
from tests.cluster_support import docker_compose_binary
from tests.conftest import ADMIN, bearer, make_user

ROOT = Path(__file__).resolve().parent.parent
URL_KEYS = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`boxoffice <args>` in a fresh process; the environment is exactly `env` (plus PATH)."""
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True, text=True,  # noqa: S603
                          timeout=timeout, check=False, cwd=cwd,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env})


# ---- row 1: no default secret -------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["ADMIN_TOKEN", "POSTGRES_PASSWORD"])
def test_docker_compose_refuses_to_start_without_each_secret(secret: str) -> None:
    env = {**os.environ, "ADMIN_TOKEN": "x" * 40, "POSTGRES_PASSWORD": "compose-test-password"}
    del env[secret]
    result = subprocess.run([docker_compose_binary(), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],  # noqa: S603
                            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=env)
    assert result.returncode != 0
    assert secret in result.stderr
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in compose and "boxoffice:boxoffice@" not in compose


def test_docker_compose_publishes_the_proxy_on_loopback_unless_told_otherwise() -> None:
    import yaml

    result = subprocess.run([docker_compose_binary(), "-f", str(ROOT / "docker-compose.yml"), "config"],  # noqa: S603
                            capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
                            env={**os.environ, "ADMIN_TOKEN": "x" * 40, "POSTGRES_PASSWORD": "compose-test-password"})
    ports = yaml.safe_load(result.stdout)["services"]["haproxy"]["ports"]
    assert ports  # the proxy is published: on loopback only
    for port in ports:
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
        assert host_ip == "127.0.0.1", ports


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])  # noqa: S104 - what the test is about
def test_a_node_refuses_a_short_admin_token_when_it_listens_beyond_loopback(
        host: str, tmp_path: Path, stack: EmbeddedStack) -> None:
    urls: dict[str, str] = stack.urls  # type: ignore[attr-defined]
    result = run_cli(["serve", "--host", host, "--port", str(free_port())],
                     {**urls, "ADMIN_TOKEN": "short-token", "BOXOFFICE_STATE_DIR": str(tmp_path)}, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "ADMIN_TOKEN" in result.stderr and "32" in result.stderr
    assert "short-token" not in result.stderr + result.stdout  # a refused secret is not echoed either


def test_settings_say_when_an_admin_token_is_too_short_for_the_address() -> None:
    short = Settings.from_env(env={"ADMIN_TOKEN": "s" * 31})
    assert short.admin_token_problem() is None  # loopback only (the default HOST)
    assert replace(short, host="0.0.0.0").admin_token_problem() is not None  # noqa: S104
    assert replace(short, host="10.1.2.3").admin_token_problem() is not None
    assert replace(short, host="localhost").admin_token_problem() is None
    assert replace(short, host="::1").admin_token_problem() is None
    long = Settings.from_env(env={"ADMIN_TOKEN": "s" * 32, "HOST": "0.0.0.0"})  # noqa: S104
    assert long.admin_token_problem() is None
    generated = Settings.from_env(env={"HOST": "0.0.0.0"})  # noqa: S104
    assert len(generated.admin_token) >= 32 and generated.admin_token_problem() is None


# ---- row 10: no private embedded stack by accident; embedded servers closed to other users ----------------


def test_serve_refuses_to_start_without_the_three_urls(tmp_path: Path) -> None:
    result = run_cli(["serve", "--port", str(free_port())],
                     {"DATABASE_URL": "", "REDIS_URL": "", "BOXOFFICE_STATE_DIR": str(tmp_path / "state")},
                     tmp_path, timeout=20)
    assert result.returncode == 2, result.stderr[-2000:]
    for key in URL_KEYS:
        assert key in result.stderr
    assert "--embed" in result.stderr
    assert not (tmp_path / "state" / "pgdata").exists()  # nothing was started


def test_migrate_names_only_the_urls_that_are_missing(tmp_path: Path, stack: EmbeddedStack) -> None:
    urls: dict[str, str] = stack.urls  # type: ignore[attr-defined]
    result = run_cli(["migrate"], {"DATABASE_URL": urls["DATABASE_URL"], "BOXOFFICE_STATE_DIR": str(tmp_path)},
                     tmp_path, timeout=20)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "REDIS_URL" in result.stderr and "KAFKA_BOOTSTRAP_SERVERS" in result.stderr
    assert "DATABASE_URL" not in result.stderr


def embedded(stack: EmbeddedStack, name: str) -> Any:
    if name not in stack.services:
        pytest.skip(f"{name} is not embedded in this run (its URL was given)")
    return stack[name]


async def test_embedded_postgres_refuses_a_connection_without_its_password(stack: EmbeddedStack) -> None:
    service = embedded(stack, "postgres")
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{service.port}/postgres", timeout=5)
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(f"postgresql://postgres:guess@127.0.0.1:{service.port}/postgres", timeout=5)
    con = await asyncpg.connect(service.url, timeout=5)  # the URL the nodes get carries the password
    try:
        assert await con.fetchval("SELECT 1") == 1
    finally:
        await con.close()


async def test_embedded_redis_refuses_a_client_without_its_password(stack: EmbeddedStack) -> None:
    service = embedded(stack, "redis")
    anonymous = Redis(host="127.0.0.1", port=service.port, socket_timeout=2)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await anonymous.get("anything")
    finally:
        await anonymous.aclose()
    client = Redis.from_url(service.url, socket_timeout=2)
    try:
        assert await client.ping()
        assert (await client.config_get("protected-mode"))["protected-mode"] == "yes"
    finally:
        await client.aclose()


def test_embedded_passwords_are_readable_by_their_owner_only(stack: EmbeddedStack) -> None:
    secrets_found = sorted(stack.state_dir.glob("*.password"))
    for service in ("postgres", "redis"):  # the embedded servers that take passwords
        if service in stack.services:
            assert stack.state_dir / f"{service}.password" in secrets_found
    assert secrets_found or not stack.services
    for path in secrets_found:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# ---- row 15: metrics for the admin, readiness without internals ------------------------------------------


async def test_metrics_need_the_admin_token(client: TestClient) -> None:
    anonymous = await client.get("/metrics")
    assert anonymous.status == 401 and (await anonymous.json())["code"] == "unauthorized"
    user = await make_user(client)
    as_user = await client.get("/metrics", headers=bearer(user["token"]))
    assert as_user.status == 403 and (await as_user.json())["code"] == "admin_required"
    as_admin = await client.get("/metrics", headers=ADMIN)
    assert as_admin.status == 200 and "boxoffice_http_requests_total" in await as_admin.text()


async def test_ready_names_the_failed_service_and_nothing_of_its_internals(
        aiohttp_client: Any, base_settings: Settings) -> None:
    broken = replace(base_settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = await aiohttp_client(create_app(broken))
    resp = await client.get("/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["checks"] == {"kafka": "ok", "postgres": "ok", "redis": "unavailable"}
    assert "Error" not in await resp.text()


async def test_a_bearer_token_that_is_not_utf8_is_refused_not_a_500(client: TestClient) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"POST /reservations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ab\xffcd\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] == b"401", status_line
