"""The matching semantics, defined once.

Every target (KQL, DuckDB SQL, ...) compiles these rules; `match_*` below are the reference
implementation in Python, used by the local hunt and by the tests as the oracle of what a compiled
query must find.

- ip:port: the log's IP and port equal the IOC's (IPv6 compared lower-case). An IP equal to an IOC's
  IP on another port is an `ip_only` match, reported separately and with lower severity.
- domain: the log's host name, lower-cased with one trailing dot removed, equals the IOC (`exact`)
  or ends with "." + IOC (`subdomain`). Never a substring or term match. IOCs are compared in their
  A-label (xn--) form and, for internationalised names, in their Unicode form too.
- url: the log URL is normalised like an IOC (scheme and host lower-case, default port, userinfo and
  fragment dropped, empty path "/", path case kept). An IOC without a query matches the same URL with
  any query; an IOC with a query matches only that query. A log URL without a scheme (Defender's
  RemoteUrl) is tried as http and as https.
- hashes: lower-case equality, only on columns of the IOC's algorithm.
- empty, "-" and null log values never match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from foxhunt.model import Ioc, IocType
from foxhunt.normalize import DEFAULT_PORTS, domain_unicode_form

# One regular expression splits a URL-like log value into scheme, host, port, path and query. It is
# written for RE2 (Kusto) and Python `re` alike; the KQL compiler embeds it verbatim.
URL_PATTERN = r"^(?:([A-Za-z][A-Za-z0-9+.-]*)://)?(?:[^@/?#]*@)?(\[[^\]/?#]*\]|[^:/?#]*)(?::([0-9]*))?([^?#]*)(\?[^#]*)?"
URL_RE = re.compile(URL_PATTERN)
SCHEMELESS_CANDIDATES = ("http", "https")

EXACT, SUBDOMAIN, IP_ONLY = "exact", "subdomain", "ip_only"


def suffix_pattern(labels: int) -> str:
    """Regex whose group 1 is the last `labels` labels of a host name."""
    return r"([^.]+" + r"(?:\.[^.]+)" * (labels - 1) + r")$" if labels > 1 else r"([^.]+)$"


def is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "-"))


# ---- IOC side: the sets each target compares against ------------------------------------------------


def endpoint_key(ip: str, port: object) -> str:
    """``ip:port`` with IPv6 in brackets, the form of ip:port IOC values."""
    ip = ip.lower()
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass(frozen=True, slots=True)
class DomainSet:
    names: frozenset[str]

    @classmethod
    def of(cls, iocs: Iterable[Ioc]) -> DomainSet:
        names: set[str] = set()
        for ioc in iocs:
            names.add(ioc.value)
            unicode = domain_unicode_form(ioc.value)
            if unicode:
                names.add(unicode)
        return cls(frozenset(names))

    @property
    def label_counts(self) -> list[int]:
        """Distinct label counts, most labels first (the most specific IOC wins)."""
        return sorted({name.count(".") + 1 for name in self.names}, reverse=True)


@dataclass(frozen=True, slots=True)
class UrlSet:
    with_query: frozenset[str]
    without_query: frozenset[str]

    @classmethod
    def of(cls, iocs: Iterable[Ioc]) -> UrlSet:
        with_query, without_query = set(), set()
        for ioc in iocs:
            (with_query if "?" in ioc.value else without_query).add(ioc.value)
        return cls(frozenset(with_query), frozenset(without_query))


def ip_of(ioc: Ioc) -> str:
    """The IP of an ip:port IOC (its value is canonical: ``1.2.3.4:443`` or ``[2001:db8::1]:443``)."""
    return ioc.value.rsplit(":", 1)[0].strip("[]")


# ---- log side: the reference implementation --------------------------------------------------------


def host_of(value: object, form: str) -> str:
    """The comparable host of a log value: lower-case, one trailing dot removed ("" when none)."""
    if is_blank(value):
        return ""
    text = str(value)
    if form == "url":
        match = URL_RE.match(text)
        text = match.group(2) if match else ""
    host = text.lower()
    return host[:-1] if host.endswith(".") else host


def match_domain(host: str, domains: DomainSet) -> tuple[str, str] | None:
    """(matched IOC, exact|subdomain) for a host already passed through `host_of`."""
    if not host or host == "-":
        return None
    labels = host.split(".")
    for count in domains.label_counts:
        if count <= len(labels):
            suffix = ".".join(labels[-count:])
            if suffix in domains.names:
                return suffix, EXACT if count == len(labels) else SUBDOMAIN
    return None


def url_candidates(value: object) -> list[tuple[str, str]]:
    """(normalised URL without query, query) pairs a log URL is compared as."""
    if is_blank(value):
        return []
    match = URL_RE.match(str(value))
    if not match:
        return []
    scheme, host, port, path, query = (g or "" for g in match.groups())
    scheme, host = scheme.lower(), host.lower()
    if host.endswith("."):
        host = host[:-1]
    path = path or "/"
    candidates = []
    for candidate_scheme in [scheme] if scheme else SCHEMELESS_CANDIDATES:
        drop_port = not port or port == str(DEFAULT_PORTS.get(candidate_scheme))
        netloc = host if drop_port else f"{host}:{port}"
        candidates.append((f"{candidate_scheme}://{netloc}{path}", query))
    return candidates


def match_url(value: object, urls: UrlSet) -> str | None:
    """The matched URL IOC, or None."""
    for base, query in url_candidates(value):
        if base in urls.without_query:
            return base
        if query and base + query in urls.with_query:
            return base + query
    return None


def match_endpoint(
    ip: object, port: object, endpoints: frozenset[str], ips: frozenset[str]
) -> tuple[str, str] | None:
    """(matched IOC, exact) for an exact ip:port, (IP, ip_only) for the IP on another port."""
    if is_blank(ip):
        return None
    ip_text = str(ip).lower()
    if not is_blank(port):
        key = endpoint_key(ip_text, port)
        if key in endpoints:
            return key, EXACT
    if ip_text in ips:
        return ip_text, IP_ONLY
    return None


def match_hash(value: object, hashes: frozenset[str]) -> str | None:
    if is_blank(value):
        return None
    digest = str(value).lower()
    return digest if digest in hashes else None


HASH_ALGORITHM_NAMES = {IocType.MD5: "MD5", IocType.SHA1: "SHA1", IocType.SHA256: "SHA256"}
