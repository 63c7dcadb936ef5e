"""The embedded-stack launcher: starts real PostgreSQL, Redis and Kafka, restarts them, stops them cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from core.settings import Settings
from server.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedStack, ServiceStartError, pid_alive


def processes_of(leaders: set[int]) -> list[int]:
    """Live processes (zombies excluded) in the process group of one of `leaders`, or their children
    (PostgreSQL puts each of its workers in a process group of its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        state, ppid, pgrp = fields[0], int(fields[1]), int(fields[2])
        if (pgrp in leaders or ppid in leaders) and state != "Z":
            found.append(int(entry.name))
    return found


def kill_if_alive(pid: int, sig: int) -> None:
    """Clean-up after a failed assertion: never leave a server of ours running."""
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def postgres_answers(url: str) -> bool:
    con = await asyncpg.connect(url, timeout=5)
    try:
        return await con.fetchval("SELECT 1") == 1  # type: ignore[no-any-return]
    finally:
        await con.close()


async def redis_answers(url: str) -> bool:
    client = Redis.from_url(url, socket_timeout=2)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


async def kafka_answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        metadata = await admin.describe_cluster()
        return len(metadata["brokers"]) >= 1
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """A stack of this module's own (the session one is shared by every other test)."""
    stack = EmbeddedStack(tmp_path_factory.mktemp("own-stack"), env={})
    stack.urls = stack.start()  # type: ignore[attr-defined]
    yield stack
    stack.stop()


def test_starts_all_three_and_each_answers(own_stack: EmbeddedStack) -> None:
    urls = own_stack.urls  # type: ignore[attr-defined]
    assert set(own_stack.services) == {"postgres", "redis", "kafka"}
    assert re.fullmatch(r"postgresql://postgres:[^@]+@127\.0\.0\.1:\d+/\S*", urls["DATABASE_URL"])
    assert re.match(r"redis://:[^@]+@127\.0\.0\.1:\d+", urls["REDIS_URL"])
    assert urls["KAFKA_BOOTSTRAP_SERVERS"].startswith("127.0.0.1:")

    async def check() -> None:
        assert await postgres_answers(urls["DATABASE_URL"])
        assert await redis_answers(urls["REDIS_URL"])
        assert await kafka_answers(urls["KAFKA_BOOTSTRAP_SERVERS"])

    asyncio.run(check())
    # state lives in the folder given: PostgreSQL's data and every service's log
    assert (own_stack.state_dir / "pgdata" / "PG_VERSION").exists()
    assert {p.name for p in own_stack.state_dir.glob("*.log")} == {"postgres.log", "redis.log", "kafka.log"}


@pytest.mark.parametrize("name", ["postgres", "redis", "kafka"])
def test_restart_each_service(own_stack: EmbeddedStack, name: str) -> None:
    urls = own_stack.urls  # type: ignore[attr-defined]
    service = own_stack[name]
    old_pid = service.proc.pid if service.proc else None
    if name == "postgres":
        asyncio.run(_pg_execute(urls["DATABASE_URL"], "CREATE TABLE IF NOT EXISTS survives_restart (x int)"))

    service.restart()

    assert service.running and service.proc is not None and service.proc.pid != old_pid
    assert old_pid is not None and not pid_alive(old_pid)
    if name == "postgres":  # same port, same data: the table is still there
        assert asyncio.run(_pg_fetch(urls["DATABASE_URL"], "SELECT to_regclass('survives_restart')::text")) \
            == "survives_restart"
    elif name == "redis":
        assert asyncio.run(redis_answers(urls["REDIS_URL"]))
    else:
        assert asyncio.run(kafka_answers(urls["KAFKA_BOOTSTRAP_SERVERS"]))


async def _pg_execute(url: str, sql: str) -> None:
    con = await asyncpg.connect(url)
    try:
        await con.execute(sql)
    finally:
        await con.close()


async def _pg_fetch(url: str, sql: str) -> object:
    con = await asyncpg.connect(url)
    try:
        return await con.fetchval(sql)
    finally:
        await con.close()


def test_stop_leaves_no_process_behind(tmp_path: Path, base_settings: Settings) -> None:
    # Redis and Kafka of its own; PostgreSQL (the slowest) too, since it forks the most children.
    stack = EmbeddedStack(tmp_path, env={})
    try:
        stack.start()
        groups = {service.proc.pid for service in stack.services.values() if service.proc}
        assert len(groups) == 3
        assert len(processes_of(groups)) > 3  # postgres forks its background workers
    finally:
        stack.stop()

    assert processes_of(groups) == []
    assert not any(service.running for service in stack.services.values())
    assert list(tmp_path.glob("*.pid")) == []


def test_a_service_whose_url_is_given_is_not_started(tmp_path: Path, base_settings: Settings) -> None:
    stack = EmbeddedStack(tmp_path, env={"DATABASE_URL": base_settings.database_url,
                                         "KAFKA_BOOTSTRAP_SERVERS": base_settings.kafka_bootstrap_servers})
    try:
        urls = stack.start()
        assert set(stack.services) == {"redis"}
        assert urls["DATABASE_URL"] == base_settings.database_url
        assert urls["KAFKA_BOOTSTRAP_SERVERS"] == base_settings.kafka_bootstrap_servers
        assert asyncio.run(redis_answers(urls["REDIS_URL"]))
        assert not (tmp_path / "pgdata").exists()
    finally:
        stack.stop()


@contextlib.contextmanager
def listening_socket() -> Iterator[int]:
    """Occupy a loopback port the way a foreign server would."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_an_occupied_port_is_an_error_naming_the_service(tmp_path: Path) -> None:
    with listening_socket() as port:
        redis = EmbeddedRedis(tmp_path, port=port)
        with pytest.raises(ServiceStartError, match=rf"^redis: port {port} .*already in use"):
            redis.start()
        assert not redis.running


def test_a_missing_kafka_binary_is_an_error_naming_the_service(
        tmp_path: Path, base_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    stack = EmbeddedStack(tmp_path, env={"DATABASE_URL": base_settings.database_url,
                                         "REDIS_URL": base_settings.redis_url})
    with pytest.raises(ServiceStartError, match=r"^kafka: .*CALF_TANSU_BIN.*no-such-tansu"):
        stack.start()
    assert stack.services["kafka"].proc is None


def test_a_binary_that_exits_at_once_is_an_error_with_its_log(
        tmp_path: Path, base_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "tansu"
    broken.write_text("#!/bin/sh\necho 'tansu: cannot open storage' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(broken))
    stack = EmbeddedStack(tmp_path, env={"DATABASE_URL": base_settings.database_url,
                                         "REDIS_URL": base_settings.redis_url})
    with pytest.raises(ServiceStartError, match=r"(?s)^kafka exited with code 3.*cannot open storage"):
        stack.start()


def test_a_postgres_left_running_by_a_killed_launcher_is_stopped_and_replaced(tmp_path: Path) -> None:
    first = EmbeddedPostgres(tmp_path)
    first.start()
    assert first.proc is not None
    orphan = first.proc.pid
    first.proc = None  # the launcher "dies" without stopping its server: postgres keeps pgdata locked
    assert pid_alive(orphan)

    second = EmbeddedPostgres(tmp_path)
    try:
        second.start()
        assert not pid_alive(orphan)
        assert asyncio.run(postgres_answers(second.url))
    finally:
        second.stop()
        kill_if_alive(orphan, signal.SIGINT)
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()


def test_a_redis_left_running_by_a_killed_launcher_is_stopped(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    first.start()
    assert first.proc is not None
    orphan = first.proc.pid
    first.proc = None

    second = EmbeddedRedis(tmp_path)
    try:
        second.start()
        assert not pid_alive(orphan)
    finally:
        second.stop()
        kill_if_alive(orphan, signal.SIGTERM)


def test_a_server_of_a_live_launcher_is_left_alone(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    first.start()
    assert first.proc is not None
    # pretend the pid file was written by another launcher that is still running (our parent)
    child = first.proc.pid
    (tmp_path / "redis.pid").write_text(f"{child} {os.getppid()} {first.command()[0]}\n")
    second = EmbeddedRedis(tmp_path)
    try:
        second.start()
        assert pid_alive(child) and second.running
    finally:
        second.stop()
        first.stop()
