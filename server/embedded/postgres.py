"""PostgreSQL from the `pgserver` wheel, run as an unprivileged user when started as root."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path
from typing import ClassVar

from server.embedded.process import (
    Service,
    ServiceStartError,
    cmdline,
    pid_alive,
    port_open,
    secret_file,
    wait_gone,
)

log = logging.getLogger("boxoffice.embedded")


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
PG_HBA = """# written by boxoffice (server/embedded/postgres.py) at every start
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
