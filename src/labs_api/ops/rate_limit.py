"""Rate limiting of API requests (every path but the probes, metrics and docs) per API key
(per client address when no keys are set).

The counting is the ``limits`` library's moving window over an in-process memory store: exact,
and right for one server process (several processes would each count on their own).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from labs_api.errors import error_body
from labs_api.ops.context import current_request
from labs_api.ops.security import needs_key


class RateLimiter:
    """Every limit of ``rate`` (e.g. ``"10/second;1000/day"``) applies to each client."""

    def __init__(self, rate: str) -> None:
        self.rate = rate
        self.items: list[RateLimitItem] = parse_many(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, client: str) -> tuple[RateLimitItem, int] | None:
        """Count one request; None if allowed, else the limit hit and seconds until a retry
        can succeed. A refused request is not counted against the client."""
        for item in self.items:
            if not self.limiter.test(item, client):
                return item, self._retry_after(item, client)
        for item in self.items:
            self.limiter.hit(item, client)
        return None

    def _retry_after(self, item: RateLimitItem, client: str) -> int:
        reset_at = self.limiter.get_window_stats(item, client).reset_time
        return max(1, math.ceil(reset_at - time.time()))


def client_identity(scope: Scope) -> str:
    """The API key's number when a key was checked, else the client's address."""
    record = current_request()
    if record is not None and record.api_key_number is not None:
        return f"key:{record.api_key_number}"
    client = scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"


class RateLimitMiddleware:
    """429 with ``Retry-After`` once a client is over the limit, in OpenAI's error shape."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not needs_key(scope):
            await self.app(scope, receive, send)
            return
        refused = self.limiter.hit(client_identity(scope))
        if refused is None:
            await self.app(scope, receive, send)
            return
        item, retry_after = refused
        response = JSONResponse(
            error_body(
                f"Rate limit reached: {item.amount} requests per {_window(item)}. "
                f"Retry in {retry_after} s.",
                "requests",
                None,
                "rate_limit_exceeded",
            ),
            status_code=429,
            headers={
                "Retry-After": str(retry_after),
                "x-ratelimit-limit-requests": str(item.amount),
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{retry_after}s",
            },
        )
        await response(scope, receive, send)


def _window(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"
