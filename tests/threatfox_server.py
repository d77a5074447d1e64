"""A fake ThreatFox on 127.0.0.1 for the tests: `http.server` in a thread, real formats, scripted faults.

By default it answers like ThreatFox from `FakeThreatFox.iocs` (API-style records, the fields of a real
``get_iocs`` answer): ``POST /api/v1/`` with the ``Auth-Key`` header (``get_iocs`` days 1-7,
``malwareinfo``, ``taginfo``), and the public exports ``GET /export/csv/recent/`` (CSV text),
``/export/csv/full/`` (a zip holding ``full.csv``) and ``/export/json/recent/`` (object keyed by id), in the
layouts described in ``shared/data/threatfox/README.md``. `script(route, Reply(...), ...)` queues answers
that come first: an HTTP status, a ``Retry-After``, a delay, a body cut off before its Content-Length,
a body trickled byte by byte; paths under ``/redirloop/`` redirect to themselves for ever.
Every request is recorded in `requests`.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

GOOD_KEY = "good-key-0123456789"
DUMP = "threatfox-2022-02-20.json"  # the bundled real get_iocs answer (452 IOCs, 20 families)
API_PATH = "/api/v1/"
EXPORT_PREFIX = "/export/"
REDIRECT_LOOP = "/redirloop/"  # any path under it answers 302 to itself
CSV_COLUMNS = (
    "first_seen_utc", "ioc_id", "ioc_value", "ioc_type", "threat_type", "fk_malware", "malware_alias",
    "malware_printable", "last_seen_utc", "confidence_level", "is_compromised", "reference", "tags",
    "anonymous", "reporter",
)  # fmt: skip
BANNER = (
    "################################################################\n"
    "# ThreatFox IOCs: {what} - CSV format                  #\n"
    "# Last updated: {now} UTC                        #\n"
    "#                                                              #\n"
    "# Terms Of Use: https://threatfox.abuse.ch/faq/#tos            #\n"
    "################################################################\n"
    "#\n"
)


@dataclass
class Reply:
    """One scripted answer. `body`: bytes, text, or a JSON value; `cut_at`: send the Content-Length of the
    whole body but only that many bytes of it, then close; `delay`: seconds before anything is sent;
    `drip`: send the body one byte at a time, this many seconds apart (a server that trickles)."""

    status: int = 200
    body: bytes | str | dict | list | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    cut_at: int | None = None
    drip: float = 0.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def recent_record(record: dict, now: datetime, age: timedelta) -> dict:
    """`record` (API layout) first and last seen `age` before `now`."""
    stamp = (now - age).strftime("%Y-%m-%d %H:%M:%S UTC")
    return {**record, "first_seen": stamp, "last_seen": stamp}


FAMILIES = ("win.qakbot", "win.bazarbackdoor", "elf.mozi", "win.njrat")
"""The families of the `records` fixture (conftest.py) that the fetch and update tests serve."""


def sample_records(families: tuple[str, ...] = (), now: datetime | None = None) -> list[dict]:
    """Records of the bundled real 2022 ``get_iocs`` answer (all, or those of `families`), re-dated to
    the last hours before `now`, one hour apart, so that they are current for the expiry policy."""
    text = resources.files("foxhunt.data").joinpath(DUMP).read_text(encoding="utf-8")
    records = [r for r in json.loads(text) if not families or r["malware"] in families]
    moment = now or datetime.now(UTC)
    return [recent_record(r, moment, timedelta(hours=n + 1)) for n, r in enumerate(records)]


def _plain_time(value: str | None) -> str:
    return (value or "").removesuffix(" UTC")


def _alias_text(record: dict) -> str:
    alias = record.get("malware_alias")
    return ",".join(alias) if isinstance(alias, list) else (alias or "None")


def _tags_text(record: dict) -> str:
    tags = record.get("tags")
    return ",".join(tags) if isinstance(tags, list) else (tags or "None")


def csv_row(record: dict) -> dict[str, str]:
    """An API record as the columns of the CSV export."""
    return {
        "first_seen_utc": _plain_time(record.get("first_seen")),
        "ioc_id": str(record["id"]),
        "ioc_value": record["ioc"],
        "ioc_type": record["ioc_type"],
        "threat_type": record.get("threat_type") or "",
        "fk_malware": record.get("malware") or "",
        "malware_alias": _alias_text(record),
        "malware_printable": record.get("malware_printable") or "",
        "last_seen_utc": _plain_time(record.get("last_seen")),
        "confidence_level": str(record.get("confidence_level", "")),
        "is_compromised": "False",
        "reference": record.get("reference") or "None",
        "tags": _tags_text(record),
        "anonymous": "0",
        "reporter": record.get("reporter") or "",
    }


def csv_export(records: list[dict], what: str, footer: bool = False) -> str:
    """The CSV export: banner, commented header, quoted values separated by comma and space."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    lines = [BANNER.format(what=what, now=now)]
    lines.append("# " + ",".join(f'"{name}"' for name in CSV_COLUMNS) + "\n")
    for record in records:
        row = csv_row(record)
        lines.append(", ".join('"' + row[name].replace('"', '""') + '"' for name in CSV_COLUMNS) + "\n")
    if footer:
        lines.append(f"#\n# Number of entries: {len(records)}\n")
    return "".join(lines)


def json_export(records: list[dict]) -> dict:
    """The JSON export: an object keyed by ioc_id, each value a one-element list."""
    document = {}
    for record in records:
        row = csv_row(record)
        entry = {name: row[name] for name in CSV_COLUMNS if name not in ("ioc_id", "fk_malware")}
        entry["malware"] = row["fk_malware"]
        entry["last_seen_utc"] = row["last_seen_utc"] or None
        document[str(record["id"])] = [entry]
    return document


def zipped(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, text)
    return buffer.getvalue()


class FakeThreatFox:
    """``with FakeThreatFox(records) as server: server.api_url, server.export_url``."""

    def __init__(self, iocs: list[dict], auth_key: str = GOOD_KEY) -> None:
        self.iocs = list(iocs)
        self.auth_key = auth_key
        self.requests: list[Request] = []
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    # -- lifecycle --

    def __enter__(self) -> FakeThreatFox:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PATH

    @property
    def export_url(self) -> str:
        return self.base_url + EXPORT_PREFIX

    # -- scripting --

    def script(self, route: str, *replies: Reply) -> None:
        """Queue answers for `route`: ``api`` or an export path such as ``csv/full/``."""
        with self._lock:
            self._scripts[route].extend(replies)

    def _next_scripted(self, route: str) -> Reply | None:
        with self._lock:
            queue = self._scripts.get(route)
            return queue.popleft() if queue else None

    def requests_to(self, route: str) -> list[Request]:
        path = API_PATH if route == "api" else EXPORT_PREFIX + route
        return [r for r in self.requests if r.path == path]

    # -- the default answers --

    def api_answer(self, request: Request) -> Reply:
        if request.headers.get("auth-key") != self.auth_key:
            return Reply(401, {"query_status": "unknown_auth_key"})
        try:
            query = request.json()
        except ValueError:
            return Reply(200, {"query_status": "illegal_query"})
        name = query.get("query")
        if name == "get_iocs":
            return Reply(200, self.api_answer_for_days(query.get("days")))
        if name == "malwareinfo":
            wanted = str(query.get("malware", "")).lower()
            data = [r for r in self.iocs if wanted in (r["malware"].lower(), r["malware_printable"].lower())]
            if not data:
                return Reply(200, {"query_status": "unknown_malware"})
            data = data[: int(query.get("limit", 100))]
        elif name == "taginfo":
            wanted = str(query.get("tag", "")).lower()
            data = [r for r in self.iocs if wanted in (t.lower() for t in r.get("tags") or [])]
            data = data[: int(query.get("limit", 100))]
        else:
            return Reply(200, {"query_status": "unknown_query"})
        if not data:
            return Reply(200, {"query_status": "no_result", "data": "Your search did not yield any results"})
        return Reply(200, {"query_status": "ok", "data": data})

    def api_answer_for_days(self, days: object) -> dict:
        """The body of the ``get_iocs`` answer: the IOCs last (else first) seen in the last `days` days."""
        if not isinstance(days, int) or not 1 <= days <= 7:
            return {"query_status": "illegal_days", "data": "Days must be between 1 and 7"}
        cutoff = datetime.now(UTC) - timedelta(days=days)
        data = [r for r in self.iocs if _seen(r) >= cutoff]
        if not data:
            return {"query_status": "no_result", "data": "Your search did not yield any results"}
        return {"query_status": "ok", "data": data}

    def export_answer(self, route: str) -> Reply:
        if route == "csv/recent/":
            return Reply(200, csv_export(self.iocs, "recent additions"), {"Content-Type": "text/csv"})
        if route == "csv/full/":
            body = zipped("full.csv", csv_export(self.iocs, "full data dump", footer=True))
            return Reply(200, body, {"Content-Type": "application/zip"})
        if route == "json/recent/":
            return Reply(200, json_export(self.iocs))
        return Reply(404, "<html><body>Not Found</body></html>", {"Content-Type": "text/html"})

    def _answer(self, request: Request) -> Reply:
        if request.path == API_PATH:
            scripted = self._next_scripted("api")
            if request.method != "POST":
                return scripted or Reply(405, {"query_status": "method_not_allowed"})
            return scripted or self.api_answer(request)
        if request.path.startswith(EXPORT_PREFIX) and request.method == "GET":
            route = request.path[len(EXPORT_PREFIX) :]
            return self._next_scripted(route) or self.export_answer(route)
        if request.path.startswith(REDIRECT_LOOP):  # a misconfigured server: redirects to itself
            return Reply(302, "", {"Location": request.path})
        return Reply(404, "not found")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                fake.requests.append(request)
                reply = fake._answer(request)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = _payload(reply.body)
                try:
                    self.send_response(reply.status)
                    headers = {"Content-Type": "application/json", **reply.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    if reply.cut_at is not None:
                        self.send_header("Connection", "close")
                    self.end_headers()
                    sent = payload if reply.cut_at is None else payload[: reply.cut_at]
                    if reply.drip:
                        for n in range(len(sent)):
                            self.wfile.write(sent[n : n + 1])
                            self.wfile.flush()
                            time.sleep(reply.drip)
                    self.wfile.write(b"" if reply.drip else sent)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass
                if reply.cut_at is not None:
                    self.close_connection = True

            do_GET = do_POST = _serve

        return Handler


def _payload(body: bytes | str | dict | list | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def _seen(record: dict) -> datetime:
    text = _plain_time(record.get("last_seen") or record.get("first_seen"))
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
