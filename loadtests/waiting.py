"""A Locust buyer in a session's waiting room, over REST: what the rush's buyers do before they may hold."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import gevent

from loadtests.contract_client import ContractClient, Reply
from loadtests.metrics import Metrics


def wait_in_line(api: ContractClient, session_id: str, rng: random.Random, metrics: Metrics,
                 back_off: Callable[[Reply], None]) -> bool:
    """Join, then ask again -- every half the estimated wait, between 2 and 30 s, stretched by up to half at
    random -- until admitted; the admission then goes with this user's holds. False: try again later. (The page
    waits on its socket instead, where the server pushes.) Each buyer's position and the times it was last told
    "not yet" and then "admitted" go to `metrics` (the out-of-order check)."""
    if session_id in api.admissions:
        return True
    sent = time.time()
    place = api.join_queue(session_id)
    waiting_sent = 0.0
    while place.ok and isinstance(place.body, dict) and not place.body.get("admitted"):
        waiting_sent = sent
        metrics.count("queue_position_answers")
        pause = min(30.0, max(2.0, place.body.get("estimatedWaitSeconds", 2) / 2))
        gevent.sleep(pause * rng.uniform(1.0, 1.5))
        sent = time.time()
        place = api.queue_place(session_id)
        if place.status == 404:  # the place was lost (Redis restarted): join again, at the back
            place = api.join_queue(session_id)
    if not place.ok or not isinstance(place.body, dict):
        back_off(place)
        return False
    if place.body.get("admission"):
        api.admissions[session_id] = place.body["admission"]
        metrics.count("queue_admitted")
        metrics.queue_place(session_id, int(place.body["position"]), waiting_sent, time.time())
    return True
