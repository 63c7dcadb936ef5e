"""The plan of one load run: what the runner decided (target, sessions, user mix, behaviour), read by the locustfile.

The runner writes it as JSON into the report folder and points the Locust processes at it with the
`BOXOFFICE_RUSH_PLAN` environment variable (forked workers inherit it). Plain data only: the runner
must not import Locust (Locust patches the standard library with gevent at import).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PLAN_ENV = "BOXOFFICE_RUSH_PLAN"
STOP_FILE = "stop-request"  # the runner creates it in the report folder to end the run early (sold out)
METRICS_DIR = "metrics"  # each Locust process writes its own counters here (<pid>.json)
WATCHER_MAPS_DIR = "watcher-maps"  # each Locust Watcher writes its last seat map here when it stops


@dataclass(frozen=True)
class BuyerPlan:
    """How a REST buyer behaves."""

    seats_min: int = 1
    seats_max: int = 4
    confirm_probability: float = 0.8  # after a hold: buy ...
    cancel_probability: float = 0.1  # ... or cancel (and pick again); the rest abandon the hold (it expires)
    retries_after_conflict: int = 2  # after a 409, pick again from the map minus the seats it named
    repick_seconds: tuple[float, float] = (0.1, 0.5)
    retry_confirm_probability: float = 0.2  # resend a confirm with the same Idempotency-Key: same sale expected
    pay_seconds: tuple[float, float] = (0.2, 1.0)  # "typing the card number" between hold and confirm
    wait_seconds: tuple[float, float] = (0.2, 1.0)  # between attempts
    sold_out_wait_seconds: tuple[float, float] = (1.0, 3.0)  # nothing free but some held: look again later
    error_wait_seconds: tuple[float, float] = (2.0, 5.0)  # after a 5xx or no answer (Retry-After wins if sent)
    buy_once: bool = True  # a rush buyer leaves after one purchase (or after abandoning)
    best_seat_jitter: float = 2.0  # how loosely "best seats" is read (0: everybody wants the very same seats)
    max_pickiness_loss: int = 7  # after n refusals the jitter is (1 + min(n, this)) times wider


@dataclass(frozen=True)
class PickerPlan:
    """How a WebSocket seat picker behaves."""

    seats_min: int = 1
    seats_max: int = 4
    hold_seconds: tuple[float, float] = (0.5, 2.0)  # looks at the held seats, then ...
    confirm_probability: float = 0.2  # ... buys them over REST, or releases them over the socket
    wait_seconds: tuple[float, float] = (0.5, 2.0)
    best_seat_jitter: float = 3.0


@dataclass(frozen=True)
class Plan:
    scenario: str
    host: str
    out_dir: str
    session_ids: list[str]
    weights: dict[str, int]  # user class name -> weight (Watcher uses watchers instead)
    watchers: int = 0  # fixed number of Watcher users (spread over the sessions)
    stop_when_sold_out: bool = False  # buyers leave once their session has no seat left
    queue_rate: float = 0.0  # > 0: every session has a waiting room admitting this many buyers per second
    queue_capacity: int = 0  # > 0: every session has a waiting room letting this many buyers in at once

    @property
    def queued(self) -> bool:
        return self.queue_rate > 0 or self.queue_capacity > 0
    buyer: BuyerPlan = field(default_factory=BuyerPlan)
    picker: PickerPlan = field(default_factory=PickerPlan)

    @property
    def user_classes(self) -> list[str]:
        return [name for name, weight in self.weights.items() if weight > 0] + (["Watcher"] if self.watchers else [])

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Plan:
        buyer = raw.pop("buyer", {})
        picker = raw.pop("picker", {})
        for part in (buyer, picker):  # JSON has lists where the dataclass has tuples
            for key, value in part.items():
                if isinstance(value, list):
                    part[key] = tuple(value)
        return cls(**raw, buyer=BuyerPlan(**buyer), picker=PickerPlan(**picker))

    @classmethod
    def load(cls, path: str | None = None) -> Plan:
        where = path or os.environ.get(PLAN_ENV)
        if not where:
            raise RuntimeError(f"no load plan: run `boxoffice rush` (it writes one), or set {PLAN_ENV} to a plan.json")
        return cls.from_dict(json.loads(Path(where).read_text()))
