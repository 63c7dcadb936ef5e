"""The rush scenarios: what users face, and how hard."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtests.plan import BuyerPlan, PickerPlan


@dataclass(frozen=True)
class Scenario:
    """What users face, and how hard: sizes, user mix and behaviour."""

    name: str
    description: str
    users: int
    spawn_rate: float
    duration: int  # seconds (the run ends earlier when a rush sells out)
    sessions: int
    rows: int
    seats_per_row: int
    weights: dict[str, int]
    watcher_share: float = 0.0  # fraction of the users that only watch (Watcher)
    stop_when_sold_out: bool = False
    hold_ttl_seconds: int = 30  # the server's default; HOLD_TTL_SECONDS in the environment overrides it
    audit_watchers_per_session: int = 2
    max_audit_watchers: int = 16
    buyer: BuyerPlan = field(default_factory=BuyerPlan)
    picker: PickerPlan = field(default_factory=PickerPlan)


SCENARIOS: dict[str, Scenario] = {
    "rush": Scenario(
        name="rush",
        description="the 10:00 rush: 5,000 buyers race for one 160-seat screening until it is sold out",
        users=5000, spawn_rate=500, duration=90, sessions=1, rows=10, seats_per_row=16,
        weights={"RushBuyer": 1}, stop_when_sold_out=True,
        buyer=BuyerPlan(confirm_probability=0.8, cancel_probability=0.1, buy_once=True,
                        wait_seconds=(0.5, 2.0), pay_seconds=(0.5, 2.0), best_seat_jitter=2.0),
    ),
    "steady": Scenario(
        name="steady",
        description="an ordinary afternoon: buyers spread over 30 screenings at a moderate pace",
        users=200, spawn_rate=40, duration=60, sessions=30, rows=10, seats_per_row=16,
        weights={"RushBuyer": 1},
        buyer=BuyerPlan(confirm_probability=0.7, cancel_probability=0.15, buy_once=False,
                        wait_seconds=(2.0, 5.0), pay_seconds=(1.0, 3.0), best_seat_jitter=4.0),
    ),
    "mixed": Scenario(
        name="mixed",
        description="REST buyers, WebSocket seat pickers and watchers on the same 8 screenings",
        users=300, spawn_rate=60, duration=60, sessions=8, rows=10, seats_per_row=16,
        weights={"RushBuyer": 5, "SeatPicker": 3}, watcher_share=1 / 6,
        buyer=BuyerPlan(confirm_probability=0.1, cancel_probability=0.6, buy_once=False,
                        wait_seconds=(1.0, 3.0), pay_seconds=(0.5, 2.0), best_seat_jitter=3.0),
        picker=PickerPlan(confirm_probability=0.05, hold_seconds=(0.5, 2.0), wait_seconds=(0.5, 2.0)),
    ),
}
