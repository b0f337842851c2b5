"""What a store failure is, and writes that outlast one.

A database can be briefly away: an SQLite file locked past its busy timeout, a full
disk, a PostgreSQL restart, a dropped connection. Requests from outside answer such a
failure at once (``503 store_unavailable``) so their sender retries; bookkeeping a live
call must not lose (when a result was delivered or spoken, the end of a call) goes
through :func:`persistently`, which retries with capped backoff and logs once per
episode instead of ending the call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from ..clock import Clock, SystemClock
from ..errors import BackchannelError, Unavailable

log = logging.getLogger("backchannel.ledger")

T = TypeVar("T")

#: Exceptions that mean "the store did not answer", not "the request was wrong".
STORE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, TimeoutError)


def is_store_error(exc: BaseException) -> bool:
    return isinstance(exc, STORE_ERRORS) and not isinstance(exc, BackchannelError)


def store_unavailable(exc: BaseException) -> Unavailable:
    """The error a request gets when the store failed under it (503, retry later)."""
    return Unavailable(
        f"the store is unavailable ({type(exc).__name__}); nothing was recorded, retry later",
        code="store_unavailable",
    )


async def persistently(
    write: Callable[[], Awaitable[T]],
    what: str,
    *,
    clock: Clock | None = None,
    limit: float = 300.0,
    first: float = 0.1,
    cap: float = 2.0,
) -> T:
    """Run ``write`` until it succeeds, retrying store failures with capped backoff for
    up to ``limit`` seconds; then the last failure is raised. Other errors (a conflict,
    a missing record) are raised at once: retrying would not change them."""
    clock = clock or SystemClock()
    started = clock.monotonic()
    delay = first
    failures = 0
    while True:
        try:
            value = await write()
        except Exception as exc:
            if not is_store_error(exc) or clock.monotonic() - started >= limit:
                if failures:
                    log.error("%s: giving up after %d tries: %s", what, failures + 1, exc)
                raise
            failures += 1
            if failures == 1:
                log.warning("%s failed (%s: %s); retrying", what, type(exc).__name__, exc)
            await clock.sleep(delay)
            delay = min(cap, delay * 2)
            continue
        if failures:
            log.warning("%s succeeded after %d tries", what, failures + 1)
        return value
