"""Getting ThreatFox data over the network: the API and the exports, with timeouts and retries.

>>> result = fetch_to_file(FetchRequest.export("full"), Path("full.csv.zip"), FetchSettings())  # doctest: +SKIP
>>> len(result.feed.iocs)  # doctest: +SKIP
"""

from __future__ import annotations

from foxhunt.acquire.errors import (
    AcquireError,
    ApiError,
    AuthError,
    BadAnswerError,
    HttpStatusError,
    NetworkError,
)
from foxhunt.acquire.http import Downloader, RetryPolicy, retry_after
from foxhunt.acquire.threatfox import (
    API_URL,
    AUTH_ENV,
    EXPORT_FORMATS,
    EXPORT_URL,
    EXPORTS,
    MAX_DAYS,
    MAX_LIMIT,
    FetchRequest,
    FetchResult,
    FetchSettings,
    fetch_feed,
    fetch_to_file,
)

__all__ = [
    "API_URL",
    "AUTH_ENV",
    "EXPORTS",
    "EXPORT_FORMATS",
    "EXPORT_URL",
    "MAX_DAYS",
    "MAX_LIMIT",
    "AcquireError",
    "ApiError",
    "AuthError",
    "BadAnswerError",
    "Downloader",
    "FetchRequest",
    "FetchResult",
    "FetchSettings",
    "HttpStatusError",
    "NetworkError",
    "RetryPolicy",
    "fetch_feed",
    "fetch_to_file",
    "retry_after",
]
