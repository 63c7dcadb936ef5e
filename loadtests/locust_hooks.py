"""Process-level hooks of a Locust run (loaded by `locustfile.py`): the heartbeat tolerance, the metrics writer
on every process, and on the master the watcher that ends the run when the runner asks or every buyer has left."""

from __future__ import annotations

from typing import Any

import gevent
import gevent.event
import locust.runners
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtests.locust_base import METRICS, OUT, PLAN
from loadtests.plan import METRICS_DIR, STOP_FILE

# A worker sharing 2 cores with the system under test can be too busy to send its 1 s heartbeat for a few
# seconds; with Locust's default liveness (3 missed beats) the master then declares it missing and
# re-spawns its users on the other worker, which distorts the run. A minute of tolerance instead.
locust.runners.HEARTBEAT_LIVENESS = 60
METRICS_WRITE_INTERVAL = 2.0


def write_metrics() -> None:
    METRICS.write(OUT / METRICS_DIR)


def _metrics_writer() -> None:
    while True:
        gevent.sleep(METRICS_WRITE_INTERVAL)
        write_metrics()


def _stop_watcher(environment: Environment) -> None:
    """On the master: end the run (the same path as --run-time) when the runner asks (sold out), or when
    every buyer of a rush has left -- bought, walked away or found nothing -- so no time is spent idle."""
    stop_file = OUT / STOP_FILE
    runner = environment.runner
    assert runner is not None
    users_seen = False  # the master learns the workers' user counts from their reports, a moment after spawning
    while True:
        gevent.sleep(0.5)
        users_seen = users_seen or (_spawned.is_set() and runner.user_count > 0)
        everybody_left = PLAN.stop_when_sold_out and users_seen and runner.user_count == 0
        if stop_file.exists() or everybody_left:
            runner.quit()
            return


_spawned = gevent.event.Event()


@events.spawning_complete.add_listener
def on_spawning_complete(user_count: int, **_: Any) -> None:
    _spawned.set()


@events.init.add_listener
def on_init(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.runner is None:
        gevent.spawn(_metrics_writer)
    else:  # the master (or a single local process)
        gevent.spawn(_stop_watcher, environment)
        if not hasattr(environment.runner, "clients"):  # a LocalRunner also runs the users
            gevent.spawn(_metrics_writer)


@events.test_stop.add_listener
def on_test_stop(**_: Any) -> None:
    write_metrics()


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    write_metrics()
    environment.process_exit_code = 0  # the runner judges the run (invariants), not Locust's failure count
