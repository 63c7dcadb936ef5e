"""A small bounded rush for the fault tests: buyers hold and buy seats through HAProxy while a fault hits.

Every answer is recorded with its time, so a test can tell what users saw before, during and after the
fault: error share, how fast errors came back, when service recovered, and which purchases were
acknowledged (each of which must still exist in PostgreSQL afterwards).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "faults"


@dataclass
class Answer:
    at: float  # seconds since the rush started
    op: str  # hold | confirm
    status: int  # 0 = no HTTP answer (connection error, client timeout)
    code: str
    latency: float


@dataclass
class RushLog:
    answers: list[Answer] = field(default_factory=list)
    acknowledged_sales: dict[str, str] = field(default_factory=dict)  # sale id -> reservation id
    unresolved_confirms: list[str] = field(default_factory=list)
    fault_start: float = 0.0
    fault_end: float = 0.0

    def window(self, start: float, end: float, op: str | None = None) -> list[Answer]:
        return [a for a in self.answers if start <= a.at < end and (op is None or a.op == op)]

    def error_share(self, start: float, end: float) -> float:
        answers = self.window(start, end)
        errors = [a for a in answers if a.status == 0 or a.status >= 500]
        return round(len(errors) / len(answers), 3) if answers else 0.0

    def recovery_seconds(self) -> float | None:
        """From the end of the fault to the first answer after it that is not a failure (5xx, no answer)."""
        after = [a for a in self.answers if a.at >= self.fault_end and 0 < a.status < 500]
        return round(min(a.at for a in after) - self.fault_end, 2) if after else None

    def error_latency_p95(self, start: float, end: float) -> float:
        errors = sorted(a.latency for a in self.window(start, end) if a.status >= 500 or a.status == 0)
        return round(errors[int(0.95 * (len(errors) - 1))], 3) if errors else 0.0

    def slowest_error(self, start: float, end: float) -> float:
        errors = [a.latency for a in self.window(start, end) if a.status >= 500 or a.status == 0]
        return round(max(errors), 3) if errors else 0.0

    def codes(self, start: float, end: float) -> dict[str, int]:
        return dict(Counter(f"{a.status} {a.code}" for a in self.window(start, end)))

    def figures(self) -> dict[str, Any]:
        end = max((a.at for a in self.answers), default=0.0)
        return {
            "requests": len(self.answers),
            "purchases_acknowledged": len(self.acknowledged_sales),
            "error_share_during_fault": self.error_share(self.fault_start, self.fault_end),
            "error_share_after_recovery": self.error_share(self.fault_end + (self.recovery_seconds() or 0) + 1, end),
            "error_answer_p95_s": self.error_latency_p95(self.fault_start, self.fault_end),
            "slowest_error_answer_s": self.slowest_error(self.fault_start, self.fault_end),
            "recovery_seconds": self.recovery_seconds(),
            "answers_during_fault": self.codes(self.fault_start, self.fault_end),
            "unresolved_confirms": len(self.unresolved_confirms),
        }


async def new_session(http: aiohttp.ClientSession, admin: dict[str, str], rows: int = 20,
                      per_row: int = 25) -> tuple[str, list[str]]:
    async with http.post("/rooms", json={"name": f"fault {uuid.uuid4().hex[:6]}", "rows": rows,
                                         "seatsPerRow": per_row}, headers=admin) as resp:
        room = await resp.json()
    start = datetime.now(UTC) + timedelta(days=1)
    async with http.post("/sessions", json={"movieTitle": "Fault", "startShowTime": start.isoformat(),
                                            "endShowTime": (start + timedelta(hours=2)).isoformat(),
                                            "roomId": room["id"], "ticketPrice": 10}, headers=admin) as resp:
        session = await resp.json()
    async with http.get(f"/sessions/{session['id']}/seats") as resp:
        seats = [s["id"] for s in (await resp.json())["seats"]]
    return session["id"], seats


async def run_rush(base_url: str, admin: dict[str, str], *, buyers: int, duration: float,
                   fault: Any, fault_at: float, seed: int = 1, release_share: float = 0.3) -> tuple[str, RushLog]:
    """Run `buyers` for `duration` seconds; call `await fault(log)` at `fault_at` (it sets the window)."""
    log = RushLog()
    rng = random.Random(seed)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(base_url=base_url, timeout=timeout) as http:
        session_id, seats = await new_session(http, admin)
        tokens = []
        for i in range(buyers):
            async with http.post("/users", json={"name": f"buyer{i}", "email": f"{uuid.uuid4().hex}@f.io"}) as r:
                tokens.append((await r.json())["token"])
        started = time.monotonic()

        async def call(op: str, method: str, url: str, **kw: Any) -> tuple[int, Any]:
            t0 = time.monotonic()
            try:
                async with http.request(method, url, **kw) as resp:
                    body = await resp.json(content_type=None) if resp.status != 204 else {}
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
                status, body = 0, {"code": "no_answer"}
            code = body.get("code", "") if isinstance(body, dict) else ""
            log.answers.append(Answer(t0 - started, op, status, code, time.monotonic() - t0))
            return status, body

        async def buy(headers: dict[str, str], reservation_id: str) -> None:
            key = {"Idempotency-Key": f"buy-{reservation_id}"}
            deadline = time.monotonic() + duration + 15
            while time.monotonic() < deadline:  # an unknown outcome resolves by retrying with the same key
                status, body = await call("confirm", "POST", f"/reservations/{reservation_id}/confirm",
                                          headers=headers | key)
                if status == 201:
                    log.acknowledged_sales[body["id"]] = reservation_id
                    return
                if status in (409, 410, 403, 404, 422):
                    return
                await asyncio.sleep(0.2)
            log.unresolved_confirms.append(reservation_id)

        async def buyer(token: str) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            while time.monotonic() - started < duration:
                pick = rng.sample(seats, rng.randint(1, 2))
                status, body = await call("hold", "POST", "/reservations", headers=headers,
                                          json={"sessionId": session_id, "sessionSeatIds": pick})
                if status == 201:
                    if rng.random() < release_share:
                        await call("release", "DELETE", f"/reservations/{body['id']}", headers=headers)
                    else:
                        await buy(headers, body["id"])
                elif status >= 500 or status in (0, 429):
                    await asyncio.sleep(0.1)
                await asyncio.sleep(rng.uniform(0.02, 0.08))

        async def inject() -> None:
            await asyncio.sleep(fault_at)
            log.fault_start = time.monotonic() - started
            await fault(lambda: time.monotonic() - started, log)
            if not log.fault_end:
                log.fault_end = time.monotonic() - started

        await asyncio.gather(inject(), *(buyer(t) for t in tokens))
    return session_id, log


def record(name: str, figures: dict[str, Any]) -> None:
    """Print the figures (docs/performance.md's fault table comes from these lines) and keep them as JSON."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nFAULT {name}: {json.dumps(figures, default=str)}")
