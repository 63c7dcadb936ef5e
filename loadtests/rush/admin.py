"""The run's set-up through the admin API: a fresh room and the scenario's sessions."""

from __future__ import annotations

import uuid

from loadtests.contract_client import ContractClient, UrllibTransport
from loadtests.rush.options import RushError
from loadtests.rush.scenarios import Scenario


def create_sessions(base_url: str, admin_token: str, scenario: Scenario,
                    queue_rate: float = 0.0, queue_capacity: int = 0) -> tuple[list[str], int]:
    """A fresh room and the scenario's sessions in it, each with a waiting room admitting `queue_rate` buyers
    per second when it is above 0; returns (session ids, seats per session)."""
    admin = ContractClient(UrllibTransport(base_url), admin_token)
    tag = uuid.uuid4().hex[:6]
    room = admin.create_room(f"Rush room {tag}", scenario.rows, scenario.seats_per_row)
    if room.status != 201:
        raise RushError(f"POST /rooms answered {room.status} {room.body}")
    ids = []
    for i in range(scenario.sessions):
        session = admin.create_session(room.body["id"], f"Rush {scenario.name} {tag} #{i + 1}")
        if session.status != 201:
            raise RushError(f"POST /sessions answered {session.status} {session.body}")
        ids.append(session.body["id"])
        if queue_rate > 0 or queue_capacity > 0:
            opened = admin.open_queue(session.body["id"], queue_rate, queue_capacity)
            if opened.status != 200:
                raise RushError(f"PUT /sessions/{{id}}/queue answered {opened.status} {opened.body}")
    return ids, scenario.rows * scenario.seats_per_row
