"""The REST write limit: an admission check (`core.appkeys.ADMISSION`) on POST/PUT/PATCH/DELETE.

The rule, the same for the socket's holds and releases, is `Limits.take_write`: a valid user token draws on its
user's bucket; a write without one -- a guest sign-up, a token that is made up, expired or revoked, any write with
AUTH_REQUIRED=false -- on its address's bucket. The admin is not limited. Answers 429 `rate_limited` with Retry-After
(contract.limits). HAProxy adds a per-address request rate across the cluster (haproxy.cfg).
"""

from __future__ import annotations

from aiohttp import web

from contract.actors import valid_principal
from core.appkeys import LIMITS, SETTINGS
from handlers.auth import PRINCIPAL, bearer_token
from storage.auth import Principal

LIMITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def rate_limiter(request: web.Request) -> None:
    """Raises RateLimited for a caller over its rate; else None (go on)."""
    if request.method not in LIMITED_METHODS:
        return
    limits = request.app[LIMITS]
    who: Principal | None = None
    if request.app[SETTINGS].auth_required:
        who = await valid_principal(request.app, bearer_token(request))
        if who is not None:
            request[PRINCIPAL] = who  # the handler's own lookup is then free
    limits.take_write(who, limits.client_ip(request))
