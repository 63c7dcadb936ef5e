"""The rush's command line: `boxoffice rush` (registered through the `boxoffice.commands` entry point) and
`python -m loadtests.rush`, with the same options and exit codes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import loadtests.rush as package
from loadtests.rush.options import RushError, RushOptions, say
from loadtests.rush.scenarios import SCENARIOS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # --scenario is checked by main(), not by argparse: an unknown one is named in the runner's own words
    parser.add_argument("--scenario", default="rush", help=f"one of: {', '.join(SCENARIOS)}")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--duration", type=int, default=None)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--host", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--queue", type=float, default=0.0, metavar="RATE",
                        help="every session gets a waiting room admitting RATE buyers per second (default: none)")
    parser.add_argument("--queue-capacity", type=int, default=0, metavar="N",
                        help="every session gets a waiting room letting at most N buyers in at once")
    parser.add_argument("--compare", action="store_true",
                        help="with --queue and/or --queue-capacity: a pass with the waiting room off, then one per "
                             "inlet given, on the same cluster; summary.json holds every pass's figures")


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    """The `boxoffice.commands` entry point: adds `rush` to the `boxoffice` command."""
    parser = subcommands.add_parser("rush", help="a bounded Locust rush, then the invariant check")
    add_arguments(parser)
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> None:
    raise SystemExit(main(args))


def main(args: argparse.Namespace) -> int:
    """`boxoffice rush`: returns the exit code (0 all invariants hold, 1 one broke, 2 the run failed)."""
    if args.scenario not in SCENARIOS:
        say(f"boxoffice rush: unknown scenario {args.scenario!r} (choose from {', '.join(SCENARIOS)})")
        return 2
    options = RushOptions.from_args(args)
    if options.users < 1 or options.duration < 1 or not 1 <= options.nodes <= 8:
        say("boxoffice rush: --users and --duration must be positive, --nodes between 1 and 8")
        return 2
    if options.queue_rate and options.queue_capacity and not options.compare:
        say("boxoffice rush: --queue and --queue-capacity are two inlets: give one, or both with --compare")
        return 2
    if options.compare and not (options.queue_rate or options.queue_capacity):
        say("boxoffice rush: --compare needs --queue RATE or --queue-capacity N (the pass with the waiting room on)")
        return 2
    try:
        from loadtests.rush.run import run  # Locust's and the launcher's imports: only when a rush runs
    except ImportError as exc:  # a node installed without the `load` extra
        print(f"boxoffice rush: {exc.name} is not installed: pip install 'boxoffice[load]'", file=sys.stderr)
        return 2

    try:
        return run(options)
    except RushError as exc:
        say(f"boxoffice rush: {exc}")
        return 2


def parse_args(argv: list[str]) -> argparse.Namespace:
    """For `python -m loadtests.rush` (the same options as `boxoffice rush`)."""
    parser = argparse.ArgumentParser(prog="boxoffice rush", description=package.__doc__)
    add_arguments(parser)
    return parser.parse_args(argv)
