"""One rush run's settings (a scenario and the command line's overrides), its error and its output."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from loadtests.rush.scenarios import SCENARIOS, Scenario

ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class RushOptions:
    scenario: Scenario
    users: int
    duration: int
    nodes: int
    host: str | None
    out: Path
    processes: int
    command: str
    queue_rate: float = 0.0  # --queue: the sessions' waiting rooms admit this many buyers per second (0: none)
    queue_capacity: int = 0  # --queue-capacity: the sessions' waiting rooms let at most this many buyers in at once
    compare: bool = False  # --compare: a pass with the waiting room off, then one per inlet given, same system

    @classmethod
    def from_args(cls, args: argparse.Namespace, argv: list[str] | None = None) -> RushOptions:
        scenario = SCENARIOS[args.scenario]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else ROOT / "reports" / "rush" / f"{scenario.name}-{stamp}"
        return cls(scenario=scenario, users=args.users or scenario.users, duration=args.duration or scenario.duration,
                   nodes=args.nodes, host=args.host, out=out.resolve(), processes=max(1, os.cpu_count() or 1),
                   command=shlex.join(["boxoffice", *(argv if argv is not None else sys.argv[1:])]),
                   queue_rate=max(0.0, getattr(args, "queue", 0.0) or 0.0),
                   queue_capacity=max(0, getattr(args, "queue_capacity", 0) or 0),
                   compare=bool(getattr(args, "compare", False)))


class RushError(RuntimeError):
    """The run could not be set up or did not run (not an invariant failure)."""


def say(message: str) -> None:
    print(message, flush=True)
