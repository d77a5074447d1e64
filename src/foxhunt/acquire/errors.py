"""What can go wrong while getting ThreatFox data, each with a message in words."""

from __future__ import annotations


class AcquireError(Exception):
    """A fetch that failed; the message says what happened and, where it helps, what to do."""


class NetworkError(AcquireError):
    """The server could not be reached or did not answer in full (timeouts, refused, cut-off answers),
    or kept answering HTTP 429 / 5xx through every retry."""


class HttpStatusError(AcquireError):
    """An HTTP error status that retrying does not cure (401, 403, 404, other 4xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class AuthError(AcquireError):
    """The ThreatFox API needs an Auth-Key and got none, or one it does not know."""


class ApiError(AcquireError):
    """ThreatFox answered, with a ``query_status`` other than ``ok`` (``no_result``, ``illegal_days``...)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class BadAnswerError(AcquireError):
    """The answer arrived but is not a usable feed: not JSON, truncated, a zip without a CSV, no valid IOC."""
