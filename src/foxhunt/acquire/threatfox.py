"""ThreatFox as a source: the API (``get_iocs``, ``malwareinfo``, ``taginfo``) and the exports.

A fetch downloads the answer to a temporary file beside its target, validates it by parsing it with
foxhunt's own feed readers (so what is saved is exactly what ``build`` reads), and only then renames
it into place: a failed fetch leaves a previous file untouched and no partial file behind.

>>> request = FetchRequest.days(1)  # doctest: +SKIP
>>> result = fetch_to_file(request, Path("recent.json"), FetchSettings(auth_key="..."))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from foxhunt.acquire.errors import (
    AcquireError,
    ApiError,
    AuthError,
    BadAnswerError,
    HttpStatusError,
)
from foxhunt.acquire.http import Answer, Downloader, Progress, RetryPolicy
from foxhunt.feeds import FeedError, read_feeds
from foxhunt.fsutil import give_normal_mode
from foxhunt.model import FeedResult, Reject

API_URL = "https://threatfox-api.abuse.ch/api/v1/"
EXPORT_URL = "https://threatfox.abuse.ch/export/"
AUTH_ENV = "THREATFOX_AUTH_KEY"
MAX_DAYS = 7
MAX_LIMIT = 1000  # the most IOCs malwareinfo / taginfo return
EXPORTS = ("recent", "full")
EXPORT_FORMATS = ("csv", "json")
#: export (name, format) -> path under the export URL; the full dump is a zip holding the CSV
EXPORT_PATHS = {
    ("recent", "csv"): "csv/recent/",
    ("full", "csv"): "csv/full/",
    ("recent", "json"): "json/recent/",
}
AUTH_HINT = f"set {AUTH_ENV} (or --auth-key) to your abuse.ch Auth-Key (free at https://auth.abuse.ch/)"
#: ThreatFox `query_status` values other than ok, in words ({term}: the malware, tag or days asked for)
STATUS_MESSAGES = {
    "no_result": "ThreatFox has no IOC for {term}",
    "illegal_days": "ThreatFox refused days={value} (it accepts 1 to 7)",
    "unknown_auth_key": f"ThreatFox does not know this Auth-Key: {AUTH_HINT}",
    "illegal_search_term": "ThreatFox refused the search term {term}",
    "illegal_malware": "ThreatFox does not know the malware family {term} (use its ThreatFox or Malpedia "
    "name, e.g. win.cobalt_strike or Cobalt Strike)",
    "unknown_malware": "ThreatFox does not know the malware family {term} (use its ThreatFox or Malpedia "
    "name, e.g. win.cobalt_strike or Cobalt Strike)",
    "illegal_tag": "ThreatFox refused the tag {term}",
    "unknown_tag": "ThreatFox does not know the tag {term}",
    "illegal_limit": "ThreatFox refused the limit (it accepts 1 to 1000)",
    "unknown_query": "ThreatFox does not know this query: is --api-url the ThreatFox API?",
}


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """What to fetch: an API query (`days`, `malware`, `tag`) or an export (`export`, `export_format`)."""

    kind: str  # "days" | "malware" | "tag" | "export"
    value: str
    export_format: str = "csv"
    limit: int = MAX_LIMIT

    @classmethod
    def days(cls, days: int) -> FetchRequest:
        return cls("days", str(days))

    @classmethod
    def malware(cls, name: str, limit: int = MAX_LIMIT) -> FetchRequest:
        return cls("malware", name, limit=limit)

    @classmethod
    def tag(cls, tag: str, limit: int = MAX_LIMIT) -> FetchRequest:
        return cls("tag", tag, limit=limit)

    @classmethod
    def export(cls, which: str, export_format: str = "csv") -> FetchRequest:
        if (which, export_format) not in EXPORT_PATHS:
            known = ", ".join(f"{w} ({f})" for w, f in EXPORT_PATHS)
            raise ValueError(f"ThreatFox has no {export_format} export {which!r}; there are: {known}")
        return cls("export", which, export_format=export_format)

    @property
    def is_api(self) -> bool:
        return self.kind != "export"

    @property
    def complete(self) -> bool:
        """True for the full export, the one source that lists every current IOC (so it alone can
        tell that an IOC was removed)."""
        return self.kind == "export" and self.value == "full"

    def api_query(self) -> dict[str, object]:
        """The JSON body of the API request."""
        if self.kind == "days":
            return {"query": "get_iocs", "days": int(self.value)}
        if self.kind == "malware":
            return {"query": "malwareinfo", "malware": self.value, "limit": self.limit}
        if self.kind == "tag":
            return {"query": "taginfo", "tag": self.value, "limit": self.limit}
        raise ValueError(f"{self.kind} is not an API query")

    def describe(self) -> str:
        """``get_iocs days=1``, ``malwareinfo win.emotet``, ``export csv/full``."""
        if self.kind == "days":
            return f"get_iocs days={self.value}"
        if self.kind == "malware":
            return f"malwareinfo {self.value}"
        if self.kind == "tag":
            return f"taginfo {self.value}"
        return f"export {EXPORT_PATHS[(self.value, self.export_format)].rstrip('/')}"

    def term(self) -> str:
        """What was asked for, in words: ``the last 2 days``, ``'win.emotet'``."""
        if self.kind == "days":
            return "the last day" if self.value == "1" else f"the last {self.value} days"
        return repr(self.value)


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """Where ThreatFox is and how to talk to it."""

    api_url: str = API_URL
    export_url: str = EXPORT_URL
    auth_key: str | None = None
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def url_for(self, request: FetchRequest) -> str:
        if request.is_api:
            return self.api_url
        return self.export_url.rstrip("/") + "/" + EXPORT_PATHS[(request.value, request.export_format)]


@dataclass(slots=True)
class FetchResult:
    """A fetched and validated feed: where it was saved, the IOCs it holds, and how it went."""

    request: FetchRequest
    url: str
    path: Path | None
    feed: FeedResult
    size: int
    attempts: int
    waits: list[float]


def fetch_to_file(
    request: FetchRequest,
    output: Path,
    settings: FetchSettings,
    *,
    progress: Progress | None = None,
    downloader: Downloader | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> FetchResult:
    """Fetch, validate and atomically save to `output`. Raises `AcquireError` (nothing written).
    Temporary files an interrupted fetch to `output` left beside it are removed first."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        for leftover in output.parent.glob(f".{output.name}.*.tmp"):
            leftover.unlink(missing_ok=True)
    except OSError as exc:
        raise AcquireError(f"cannot write beside {output}: {exc.strerror or exc}") from None
    with _temporary_file(output.parent, f".{output.name}.") as temp:
        result = _fetch(request, temp, settings, progress, downloader, on_retry)
        try:
            give_normal_mode(temp)
            os.replace(temp, output)
        except OSError as exc:
            raise AcquireError(f"cannot write {output}: {exc.strerror or exc}") from None
    result.path = output
    return result


def fetch_feed(
    request: FetchRequest,
    workdir: Path,
    settings: FetchSettings,
    *,
    progress: Progress | None = None,
    downloader: Downloader | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> FetchResult:
    """Fetch and validate into a temporary file in `workdir`, deleted afterwards: the IOCs only."""
    with _temporary_file(workdir, ".foxhunt-fetch.") as temp:
        result = _fetch(request, temp, settings, progress, downloader, on_retry)
    result.path = None
    return result


@contextmanager
def _temporary_file(directory: Path, prefix: str) -> Iterator[Path]:
    """A new empty file in `directory`, removed on the way out; OSErrors become `AcquireError`s."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise AcquireError(f"cannot write a temporary file in {directory}: {exc.strerror or exc}") from None
    temp = Path(name)
    try:
        yield temp
    except OSError as exc:
        raise AcquireError(f"cannot write {temp}: {exc.strerror or exc}") from None
    finally:
        temp.unlink(missing_ok=True)


def _fetch(
    request: FetchRequest,
    temp: Path,
    settings: FetchSettings,
    progress: Progress | None,
    downloader: Downloader | None,
    on_retry: Callable[[str], None] | None,
) -> FetchResult:
    url = settings.url_for(request)
    headers: dict[str, str] = {}
    if request.is_api:
        if not settings.auth_key:
            raise AuthError(f"the ThreatFox API needs an Auth-Key: {AUTH_HINT}")
        headers["Auth-Key"] = settings.auth_key  # the exports are public: the key goes to the API only
    client = downloader or Downloader(settings.timeout, settings.retry, on_retry=on_retry)
    try:
        if request.is_api:
            body = request.api_query()
            # not following redirects: httpx would send the Auth-Key header on to any other origin
            answer = client.download("POST", url, temp, json=body, headers=headers, progress=progress)
        else:
            answer = client.download("GET", url, temp, progress=progress, follow_redirects=True)
    finally:
        if downloader is None:
            client.close()
    if not answer.ok:
        raise _status_error(request, answer)
    if request.is_api:
        _check_api_answer(request, url, temp)
    feed = _validate(request, url, temp)
    return FetchResult(request, url, temp, feed, answer.size, answer.attempts, answer.waits)


def _status_error(request: FetchRequest, answer: Answer) -> AcquireError:
    """The message for a final non-2xx answer."""
    status = f"HTTP {answer.status} {answer.reason}".rstrip()
    if request.is_api and 300 <= answer.status < 400:
        where = answer.headers.get("location") or answer.headers.get("Location") or "nowhere"
        return HttpStatusError(
            f"{answer.url}: the API redirects ({status}) to {where}; foxhunt does not follow API "
            "redirects, so that the Auth-Key goes nowhere else: give the right URL as --api-url",
            answer.status,
        )
    query_status = _query_status(answer.error_body)
    if request.is_api and (answer.status in (401, 403) or query_status == "unknown_auth_key"):
        said = f" ({query_status})" if query_status else ""
        return AuthError(f"{answer.url}: ThreatFox refused the Auth-Key ({status}{said}): {AUTH_HINT}")
    if query_status and query_status in STATUS_MESSAGES:
        return ApiError(f"{answer.url}: {_status_text(request, query_status)} ({status})", query_status)
    if answer.status == 404:
        where = "--api-url" if request.is_api else "--export-url"
        return HttpStatusError(f"{answer.url}: not found ({status}); check {where}", answer.status)
    detail = _snippet(answer.error_body)
    return HttpStatusError(f"{answer.url}: {status}{f': {detail}' if detail else ''}", answer.status)


def _query_status(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    status = document.get("query_status") if isinstance(document, dict) else None
    return status if isinstance(status, str) else None


def _status_text(request: FetchRequest, status: str) -> str:
    template = STATUS_MESSAGES.get(status)
    if template is None:
        return f"ThreatFox answered query_status {status!r} to {request.describe()}"
    return template.format(term=request.term(), value=request.value)


def _snippet(body: bytes, limit: int = 200) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[:limit] + "..."


def _check_api_answer(request: FetchRequest, url: str, path: Path) -> None:
    """An API answer must be JSON with ``query_status`` ok; anything else is said in words."""
    body = path.read_bytes()
    if not body.strip():
        raise BadAnswerError(f"{url}: ThreatFox sent an empty answer to {request.describe()}")
    try:
        document = json.loads(body)
    except ValueError as exc:
        if body.lstrip()[:1] in (b"{", b"["):
            raise BadAnswerError(
                f"{url}: the answer is not complete JSON (truncated after {len(body)} bytes?): {exc}"
            ) from None
        raise BadAnswerError(f"{url}: the answer is not JSON (starts with {_snippet(body, 60)!r})") from None
    if not isinstance(document, dict) or not isinstance(document.get("query_status"), str):
        raise BadAnswerError(f"{url}: not a ThreatFox API answer (no query_status); is --api-url right?")
    status = document["query_status"]
    if status == "ok":
        return
    if status == "unknown_auth_key":
        raise AuthError(f"{url}: {STATUS_MESSAGES[status]}")
    data = document.get("data")
    detail = f" (ThreatFox said: {data})" if isinstance(data, str) and data.strip() else ""
    raise ApiError(f"{url}: {_status_text(request, status)}{detail}", status)


def _validate(request: FetchRequest, url: str, path: Path) -> FeedResult:
    """Parse the saved answer with the feed readers: it must hold at least one valid IOC."""
    try:
        feed = read_feeds([path])
    except FeedError as exc:
        message = str(exc).replace(str(path), url, 1)
        raise BadAnswerError(_reader_message(message, path, url)) from None
    if not feed.iocs:
        if feed.rejects:
            first = str(feed.rejects[0]).replace(str(path), url, 1)
            raise BadAnswerError(
                f"{url}: none of the {len(feed.rejects)} records is a valid IOC (first: {first})"
            )
        what = "ThreatFox has no IOC for " + request.term() if request.is_api else "the export holds no IOC"
        raise ApiError(f"{url}: {what}", "no_result")
    feed.files = [url]
    feed.rejects = [Reject(url, r.record, r.reason, r.value) for r in feed.rejects]
    return feed


def _reader_message(message: str, path: Path, url: str) -> str:
    """A feed reader's message about the temporary file, told about the download instead."""
    if "zip archive holds no .csv" in message:
        return f"{url}: the answer is a zip archive without a CSV file in it"
    if "invalid JSON" in message:
        return f"{url}: the answer is not complete JSON (truncated or an error page?): {message.split('invalid JSON', 1)[1].strip(' ()')}"
    if "empty file" in message:
        return f"{url}: the answer is empty"
    if "cannot read" in message:
        return f"{message} (a truncated or damaged download?)"
    return message
