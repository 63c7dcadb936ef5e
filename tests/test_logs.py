"""Logs: JSON lines, a coloured console for a person at a terminal, and daily-rotated, gzipped, pruned files."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server import cli
from server.logs import ConsoleFormatter, DailyLogFile, setup_logging, wants_color

DAY = timedelta(days=1)


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """setup_logging replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in saved:
            handler.close()
    root.handlers[:], root.level = saved, level


def record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("boxoffice.test", level, __file__, 1, msg, None, None)


def roll_over_at(handler: DailyLogFile, midnight: datetime) -> None:
    """What the handler does by itself when the first record after `midnight` (UTC) arrives."""
    handler.rolloverAt = int(midnight.timestamp())
    handler.doRollover()
    assert handler.compressing is not None
    handler.compressing.join(10)


def test_daily_files_are_gzipped_at_midnight_and_only_the_retention_is_kept(tmp_path: Path) -> None:
    handler = DailyLogFile(tmp_path, "node-1", retention_days=3)
    handler.setFormatter(logging.Formatter("%(message)s"))
    first = datetime(2026, 3, 1, tzinfo=UTC)
    for n in range(5):  # five days of logs, a rollover at the end of each
        handler.emit(record(f"a line of {(first + n * DAY):%Y-%m-%d}"))
        roll_over_at(handler, first + (n + 1) * DAY)
    handler.emit(record("today's line"))
    handler.close()

    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["boxoffice-node-1-2026-03-03.log.gz", "boxoffice-node-1-2026-03-04.log.gz",
                    "boxoffice-node-1-2026-03-05.log.gz", "boxoffice-node-1.log"]
    for day in ("2026-03-03", "2026-03-04", "2026-03-05"):
        with gzip.open(tmp_path / f"boxoffice-node-1-{day}.log.gz", "rt") as f:
            assert f.read() == f"a line of {day}\n"
    assert (tmp_path / "boxoffice-node-1.log").read_text() == "today's line\n"


def test_the_library_rolls_over_by_itself_once_midnight_has_passed(tmp_path: Path) -> None:
    handler = DailyLogFile(tmp_path, "host:8080", retention_days=14)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(record("yesterday"))
    handler.rolloverAt = int(datetime.now(UTC).timestamp()) - 1  # midnight just passed
    handler.emit(record("today"))  # shouldRollover() sees it: the library's own path
    assert handler.compressing is not None
    handler.compressing.join(10)
    handler.close()
    yesterday = (datetime.now(UTC) - DAY).strftime("%Y-%m-%d")
    with gzip.open(tmp_path / f"boxoffice-host_8080-{yesterday}.log.gz", "rt") as f:
        assert f.read() == "yesterday\n"
    assert (tmp_path / "boxoffice-host_8080.log").read_text() == "today\n"


def test_log_dir_adds_json_lines_files_to_stderr(tmp_path: Path, root_handlers: None) -> None:
    setup_logging("INFO", "json", "node-7", log_dir=str(tmp_path / "logs"), retention_days=2)
    logging.getLogger("boxoffice.test").warning("seat map sent", extra={"fields": {"seats": 3}})
    for handler in logging.getLogger().handlers:
        handler.flush()
    line = json.loads((tmp_path / "logs" / "boxoffice-node-7.log").read_text())
    assert line["msg"] == "seat map sent" and line["node"] == "node-7" and line["seats"] == 3
    assert line["level"] == "warning"


def test_console_lines_colour_the_level_on_a_terminal_only() -> None:
    coloured = ConsoleFormatter(color=True).format(record("hold expired", logging.WARNING))
    plain = ConsoleFormatter(color=False).format(record("hold expired", logging.WARNING))
    assert "\033[33mWARNING\033[0m" in coloured and coloured.endswith("hold expired")
    assert "\033[" not in plain and " WARNING " in plain


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_needs_a_terminal_and_respects_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert wants_color(Terminal()) is True
    assert wants_color(io.StringIO()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert wants_color(Terminal()) is False


@pytest.mark.parametrize(("env", "expected"), [(None, "console"), ("json", "json")])
def test_make_run_logs_for_a_person_unless_log_format_says_otherwise(
        monkeypatch: pytest.MonkeyPatch, root_handlers: None, env: str | None, expected: str) -> None:
    if env is None:
        monkeypatch.delenv("LOG_FORMAT", raising=False)
    else:
        monkeypatch.setenv("LOG_FORMAT", env)
    settings = cli._settings(argparse.Namespace(host=None, port=None), log_format="console")  # as `dev` does
    assert settings.log_format == expected
    assert cli._settings(argparse.Namespace(host=None, port=None)).log_format == (env or "json")  # as `serve`
