"""The matching semantics, defined once.

Every target compiles these rules: `matching/kql.py` to KQL, `hunt/sql.py` to DuckDB SQL. This module
holds what they share: the URL pattern, the label-suffix patterns, the IOC-side sets
and the match classes. The tests check each target against declared planted hits (tests/logcorpus.py).

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

from collections.abc import Iterable
from dataclasses import dataclass

from foxhunt.model import Ioc
from foxhunt.normalize import domain_unicode_form

# One regular expression splits a URL-like log value into scheme, host, port, path and query. It is
# written for RE2 (Kusto) and Python `re` alike; the KQL compiler embeds it verbatim.
URL_PATTERN = r"^(?:([A-Za-z][A-Za-z0-9+.-]*)://)?(?:[^@/?#]*@)?(\[[^\]/?#]*\]|[^:/?#]*)(?::([0-9]*))?([^?#]*)(\?[^#]*)?"
SCHEMELESS_CANDIDATES = ("http", "https")

EXACT, SUBDOMAIN, IP_ONLY = "exact", "subdomain", "ip_only"


def suffix_pattern(labels: int) -> str:
    """Regex whose group 1 is the last `labels` labels of a host name."""
    return r"([^.]+" + r"(?:\.[^.]+)" * (labels - 1) + r")$" if labels > 1 else r"([^.]+)$"


# ---- IOC side: the sets each target compares against ------------------------------------------------


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
