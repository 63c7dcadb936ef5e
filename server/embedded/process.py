"""A service run as a child process in its own process group: start, wait for its port, stop, restart."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
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
