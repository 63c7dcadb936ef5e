"""Logging set-up: JSON lines (or coloured console text) carrying the request id, and daily-rotated files."""

from __future__ import annotations

import contextvars
import gzip
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path
from typing import TextIO

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str = "") -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        if self.node_id:
            entry["node"] = self.node_id
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    """One human line per record; the level in colour when `color` (a terminal that did not ask for NO_COLOR)."""

    COLORS = {"DEBUG": "\033[2m", "INFO": "\033[32m", "WARNING": "\033[33m", "ERROR": "\033[31m",
              "CRITICAL": "\033[1;31m"}
    RESET = "\033[0m"

    def __init__(self, color: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = request_id_var.get()
        line = super().format(record)
        color = self.COLORS.get(record.levelname) if self.color else None
        if color:  # colour the level word only: the line stays greppable
            level = f"{record.levelname:<7}"
            line = line.replace(f" {level} ", f" {color}{level}{self.RESET} ", 1)
        return line


def wants_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and hasattr(stream, "isatty") and stream.isatty()


class DailyLogFile(TimedRotatingFileHandler):
    """`<folder>/boxoffice-<node>.log`, rolled over at midnight UTC into `boxoffice-<node>-YYYY-MM-DD.log.gz`.

    The standard library's handler does the timing and the renaming; this one names the day's file, gzips it
    in a thread (a day of logs must not stall the event loop that logged the line which rolled it over), and
    keeps the newest `retention_days` of them.
    """

    def __init__(self, folder: Path, node_id: str, retention_days: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.stem = "boxoffice-" + (re.sub(r"[^A-Za-z0-9._-]", "_", node_id) or "node")
        super().__init__(folder / f"{self.stem}.log", when="midnight", utc=True, backupCount=retention_days,
                         encoding="utf-8", delay=True)
        self.namer = self._day_name
        self.rotator = self._gzip
        self.compressing: threading.Thread | None = None

    def _day_name(self, default_name: str) -> str:
        day = default_name.rsplit(".", 1)[-1]  # the library's name is `<base>.<YYYY-MM-DD>`
        return str(Path(self.baseFilename).with_name(f"{self.stem}-{day}.log.gz"))

    def _gzip(self, source: str, dest: str) -> None:
        plain = dest.removesuffix(".gz")
        os.replace(source, plain)  # at once; the compression follows in the background

        def compress() -> None:
            with open(plain, "rb") as src, gzip.open(dest + ".part", "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(dest + ".part", dest)
            os.remove(plain)
            self._prune()

        if self.compressing is not None:
            self.compressing.join()
        self.compressing = threading.Thread(target=compress, name="log-gzip", daemon=True)
        self.compressing.start()

    def getFilesToDelete(self) -> list[str]:  # noqa: N802 - the library's name
        return []  # the library's matching does not know our names: _prune() keeps the newest ones instead

    def _prune(self) -> None:
        days = sorted(Path(self.baseFilename).parent.glob(f"{self.stem}-????-??-??.log.gz"))
        for old in days[: max(0, len(days) - self.backupCount)]:
            old.unlink(missing_ok=True)


def setup_logging(level: str = "INFO", fmt: str = "json", node_id: str = "", log_dir: str = "",
                  retention_days: int = 14) -> None:
    """Records to stderr (JSON lines, or `fmt="console"`: human text, coloured on a terminal) and, with
    `log_dir`, also to a daily-rotated JSON-lines file there (see DailyLogFile)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node_id) if fmt == "json" else ConsoleFormatter(wants_color(sys.stderr)))
    handlers: list[logging.Handler] = [handler]
    if log_dir:
        daily = DailyLogFile(Path(log_dir), node_id, retention_days)
        daily.setFormatter(JsonFormatter(node_id))
        handlers.append(daily)
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, DailyLogFile):
            old.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    # aiohttp's access log is one line per request: too much under a rush.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # its warning about a subprotocol offer it cannot match lists the offer, which may carry a bearer token
    logging.getLogger("aiohttp.websocket").setLevel(logging.ERROR)
