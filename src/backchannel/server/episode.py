"""A recurring failure, logged once when it starts and once when it ends.

A worker that retries every second through a ten-minute outage should not write six
hundred tracebacks: :class:`Episode` turns each outage into two lines.
"""

from __future__ import annotations

import logging


class Episode:
    """Log a recurring failure once when it starts and once when it ends, not every try.

    ``failed`` returns whether this is the episode's first failure (so the caller may
    log it with more detail).
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.failures = 0

    def failed(self, exc: BaseException, level: int = logging.WARNING) -> bool:
        self.failures += 1
        if self.failures == 1:
            self.logger.log(level, "%s failed: %s: %s", self.what, type(exc).__name__, exc)
            return True
        return False

    def succeeded(self) -> None:
        if self.failures:
            self.logger.warning("%s works again after %d failed tries", self.what, self.failures)
        self.failures = 0
