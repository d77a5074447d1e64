"""Downloading one answer to a file with httpx: timeouts everywhere, bounded retries with backoff.

Retried: HTTP 429 and 5xx answers, timeouts, refused or reset connections and answers cut off before
their end. A ``Retry-After`` header (seconds or an HTTP date) is honoured up to `RetryPolicy.max_wait`;
otherwise the wait doubles from `RetryPolicy.backoff` (capped at `max_wait`), with random jitter so that
many scheduled clients do not retry in step. Everything else (401, 404, ...) is returned at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from foxhunt import __version__
from foxhunt.acquire.errors import AcquireError, NetworkError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error answer kept for its message
MAX_REDIRECTS = 10
USER_AGENT = f"foxhunt/{__version__}"
#: Called with (bytes received, total bytes or None) while an answer downloads.
Progress = Callable[[int, int | None], None]


def sleep(seconds: float) -> None:
    """The wait between attempts (module level so that tests can replace it)."""
    time.sleep(seconds)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` tries in all; waits of `backoff` * 2**n seconds with jitter, or Retry-After, at most
    `max_wait` seconds each."""

    attempts: int = 4
    backoff: float = 1.0
    max_wait: float = 60.0
    jitter: float = 0.5  # a wait is drawn from [(1 - jitter) * w, w]

    def backoff_wait(self, retry: int, draw: Callable[[], float] = random.random) -> float:
        """The wait before retry number `retry` (1-based) without a Retry-After."""
        wait = min(self.max_wait, self.backoff * 2 ** (retry - 1))
        return wait * (1 - self.jitter * draw())


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (``120`` or an HTTP date); None when absent or
    unreadable, 0 for a date in the past."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


@dataclass(slots=True)
class Answer:
    """A final answer: its status and headers; a 2xx body is in the file given to `download`,
    any other body (up to `ERROR_BODY_LIMIT` bytes) in `error_body`."""

    url: str
    status: int
    reason: str
    headers: Mapping[str, str]
    size: int = 0
    attempts: int = 1
    error_body: bytes = b""
    waits: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class _Retry(Exception):
    """One attempt failed in a way worth another try."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.wait = reason, wait


class Downloader:
    """Fetches answers to files. `timeout` (seconds) bounds connecting, each read and each write, and
    also each attempt as a whole (checked as the answer arrives, so a server that trickles data cannot
    hold a download open forever). Redirects are followed only where `download` is told to; the
    transport can be replaced (``httpx.MockTransport``) and `sleep` is the module function above;
    `on_retry` is told each failed attempt that will be retried, in words."""

    def __init__(
        self,
        timeout: float = 30.0,
        policy: RetryPolicy = RetryPolicy(),
        *,
        transport: httpx.BaseTransport | None = None,
        draw: Callable[[], float] = random.random,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.timeout = timeout
        self.policy = policy
        self.draw = draw
        self.on_retry = on_retry
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            max_redirects=MAX_REDIRECTS,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def download(
        self,
        method: str,
        url: str,
        target: Path,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        follow_redirects: bool = False,
    ) -> Answer:
        """Send the request until it gets a final answer; a 2xx body is written to `target` (replaced on
        each attempt). A 3xx is a final answer unless `follow_redirects` (never give it with secret
        headers: httpx keeps custom headers across origins). Raises `NetworkError` when every attempt
        failed or the redirects loop, `AcquireError` for a URL httpx cannot use."""
        waits: list[float] = []
        reason = ""
        for attempt in range(1, self.policy.attempts + 1):
            try:
                answer = self._attempt(method, url, target, json, headers, progress, follow_redirects)
            except _Retry as failure:
                reason = failure.reason
                if attempt == self.policy.attempts:
                    break
                wait = self.policy.backoff_wait(attempt, self.draw) if failure.wait is None else failure.wait
                wait = min(wait, self.policy.max_wait)
                waits.append(wait)
                if self.on_retry is not None:
                    self.on_retry(
                        f"{url}: {reason}; retrying in {wait:.1f} s (attempt {attempt + 1} of {self.policy.attempts})"
                    )
                sleep(wait)
                continue
            answer.attempts, answer.waits = attempt, waits
            return answer
        tries = f"{self.policy.attempts} attempts" if self.policy.attempts > 1 else "1 attempt"
        raise NetworkError(f"{url}: {reason} ({tries})")

    def _attempt(
        self,
        method: str,
        url: str,
        target: Path,
        json: Any,
        headers: Mapping[str, str] | None,
        progress: Progress | None,
        follow_redirects: bool,
    ) -> Answer:
        response: httpx.Response | None = None
        expected: int | None = None
        deadline = time.monotonic() + self.timeout
        try:
            with self._client.stream(
                method, url, json=json, headers=headers, follow_redirects=follow_redirects
            ) as response:
                answer = Answer(url, response.status_code, response.reason_phrase, dict(response.headers))
                if response.status_code in RETRY_STATUSES:
                    wait = retry_after(response.headers.get("Retry-After"))
                    what = "rate limited" if response.status_code == 429 else "server error"
                    raise _Retry(
                        f"{what}: HTTP {response.status_code} {response.reason_phrase}".rstrip(), wait
                    )
                if not answer.ok:
                    answer.error_body = _read_limited(response, self._check_deadline(deadline))
                    return answer
                length = response.headers.get("Content-Length", "")
                expected = int(length) if length.isdigit() else None
                check = self._check_deadline(deadline)
                with target.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        check()
                        handle.write(chunk)
                        answer.size += len(chunk)
                        if progress is not None:
                            progress(response.num_bytes_downloaded, expected)
                return answer
        except httpx.TimeoutException as exc:
            raise _Retry(f"timed out: no {_timeout_phase(exc)} within {self.timeout:g} s") from None
        except httpx.RemoteProtocolError as exc:
            received = response.num_bytes_downloaded if response is not None else 0
            if received or expected:
                of = f" of {expected}" if expected else ""
                raise _Retry(f"answer cut off: the connection closed after {received}{of} bytes") from None
            raise _Retry(f"the server closed the connection without an answer ({exc})") from None
        except httpx.DecodingError as exc:
            raise _Retry(f"answer cannot be decoded ({exc})") from None
        except httpx.TooManyRedirects:
            raise NetworkError(
                f"{url}: the server redirects in a loop (more than {MAX_REDIRECTS} redirects)"
            ) from None
        except httpx.UnsupportedProtocol as exc:
            raise AcquireError(f"{url}: cannot use this URL ({exc})") from None
        except httpx.TransportError as exc:
            raise _Retry(f"cannot reach the server ({exc or type(exc).__name__})") from None
        except httpx.InvalidURL as exc:
            raise AcquireError(f"{url}: not a valid URL ({exc})") from None
        except (httpx.HTTPError, httpx.StreamError) as exc:  # anything else httpx can raise
            raise NetworkError(f"{url}: {exc or type(exc).__name__}") from None

    def _check_deadline(self, deadline: float) -> Callable[[], None]:
        """A check to call as data arrives: fails the attempt once it has run longer than `timeout`."""

        def check() -> None:
            if time.monotonic() > deadline:
                raise _Retry(f"timed out: the answer took longer than {self.timeout:g} s in all")

        return check


def _read_limited(response: httpx.Response, check: Callable[[], None]) -> bytes:
    body = bytearray()
    for chunk in response.iter_bytes():
        check()
        body += chunk
        if len(body) >= ERROR_BODY_LIMIT:
            break
    return bytes(body[:ERROR_BODY_LIMIT])


def _timeout_phase(exc: httpx.TimeoutException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection"
    if isinstance(exc, httpx.WriteTimeout):
        return "upload progress"
    if isinstance(exc, httpx.PoolTimeout):
        return "free connection"
    return "answer data"
