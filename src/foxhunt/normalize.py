"""Refanging, normalisation and validation of IOC values.

Every function here takes one raw value and returns its canonical form or raises `InvalidIoc` with a
reason a human can act on. The canonical forms are what every target (KQL, DuckDB, Sigma...) compares.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import idna

from foxhunt.model import IocType


class InvalidIoc(ValueError):
    """A value that is not a valid IOC of its type."""


_REFANG = [
    (re.compile(r"\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)", re.IGNORECASE), "."),
    (re.compile(r"\[:\]|\(:\)"), ":"),
    (re.compile(r"\[://\]"), "://"),
    (re.compile(r"^hxxp(s?)(?=(:|\[:\])//)", re.IGNORECASE), r"http\1"),
    (re.compile(r"^fxp(?=(:|\[:\])//)", re.IGNORECASE), "ftp"),
]

DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")
_HEX = re.compile(r"^[0-9a-f]+$")
HASH_LENGTHS = {IocType.MD5: 32, IocType.SHA1: 40, IocType.SHA256: 64}


def refang(value: str) -> str:
    """Undo the usual defanging: ``[.]``, ``(.)``, ``[:]``, ``hxxp(s)://``."""
    value = value.strip()
    for pattern, replacement in _REFANG:
        value = pattern.sub(replacement, value)
    return value


def normalize_ip(value: str) -> str:
    """Canonical text of an IPv4 or IPv6 address (IPv6 compressed, lower-case)."""
    if "%" in value:
        raise InvalidIoc(f"scoped IPv6 address (with %zone) is not an IOC: {value!r}")
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        raise InvalidIoc(f"not an IP address: {value!r}") from None


def parse_port(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise InvalidIoc(f"port is not a number: {value!r}")
    port = int(value)
    if not 1 <= port <= 65535:
        raise InvalidIoc(f"port out of range 1-65535: {port}")
    return port


def split_ip_port(value: str) -> tuple[str, int]:
    """``1.2.3.4:443`` or ``[2001:db8::1]:443`` -> (canonical ip, port)."""
    value = refang(value)
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise InvalidIoc(f"bracketed IPv6 without ':port': {value!r}")
        ip = normalize_ip(host)
    else:
        if value.count(":") > 1:
            raise InvalidIoc(f"ambiguous IPv6 with port, write it as [address]:port: {value!r}")
        host, sep, port = value.rpartition(":")
        if not sep:
            raise InvalidIoc(f"no port in ip:port value: {value!r}")
        ip = normalize_ip(host)
    return ip, parse_port(port)


def format_ip_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def normalize_ip_port(value: str) -> str:
    return format_ip_port(*split_ip_port(value))


def normalize_domain(value: str, min_labels: int = 2) -> str:
    """Lower-case A-label form, one trailing dot removed; rejects IPs, single labels and junk."""
    name = refang(value).lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise InvalidIoc("empty domain")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise InvalidIoc(f"an IP address is not a domain: {value!r}")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidIoc(f"not a valid internationalised domain name: {value!r} ({exc})") from None
    labels = name.split(".")
    if len(labels) < min_labels:
        raise InvalidIoc(f"a domain needs at least two labels: {value!r}")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidIoc(f"not a valid host name: {value!r}")
    if labels[-1].isdigit():
        raise InvalidIoc(f"top-level label is numeric: {value!r}")
    return name


def domain_unicode_form(name: str) -> str | None:
    """The U-label form of an A-label domain, or None when it has no xn-- label (or cannot decode)."""
    if "xn--" not in name:
        return None
    try:
        return idna.decode(name)
    except idna.IDNAError:
        return None


def normalize_host(host: str) -> str:
    """A URL host: an IP (IPv6 kept in brackets) or a host name (a single label is allowed)."""
    if host.startswith("[") and host.endswith("]"):
        return f"[{normalize_ip(host[1:-1])}]"
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return normalize_domain(host, min_labels=1)


def normalize_url(value: str) -> str:
    """``scheme://host[:port]/path[?query]``: scheme and host lower-cased, default port, userinfo and
    fragment dropped, empty path written ``/``, path and query case kept."""
    raw = refang(value)
    if any(ch.isspace() for ch in raw):
        raise InvalidIoc(f"URL contains white space: {value!r}")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise InvalidIoc(f"not a valid URL: {value!r} ({exc})") from None
    scheme = parts.scheme.lower()
    if not scheme or not parts.netloc:
        raise InvalidIoc(f"URL needs a scheme and a host: {value!r}")
    hostport = parts.netloc.rpartition("@")[2]
    host = hostport.rsplit(":", 1)[0] if port is not None or hostport.endswith(":") else hostport
    if not host:
        raise InvalidIoc(f"URL has an empty host: {value!r}")
    host = normalize_host(host.lower())
    if port == 0:
        raise InvalidIoc(f"URL port out of range 1-65535: {value!r}")
    netloc = host if port is None or DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"


def normalize_hash(value: str, ioc_type: IocType) -> str:
    digest = value.strip().lower()
    expected = HASH_LENGTHS[ioc_type]
    if len(digest) != expected or not _HEX.match(digest):
        raise InvalidIoc(f"{ioc_type.value} must be {expected} hex characters, got {len(digest)}: {value!r}")
    return digest


def normalize_ioc(value: str, ioc_type: IocType) -> str:
    """Dispatch to the normaliser of `ioc_type`."""
    if ioc_type is IocType.IP_PORT:
        return normalize_ip_port(value)
    if ioc_type is IocType.DOMAIN:
        return normalize_domain(value)
    if ioc_type is IocType.URL:
        return normalize_url(value)
    return normalize_hash(value, ioc_type)


def defang(value: str) -> str:
    """Defang for display: every dot becomes ``[.]``, ``http`` becomes ``hxxp``, ``://`` ``[://]``."""
    if "://" in value:
        scheme, _, rest = value.partition("://")
        return f"{scheme.replace('http', 'hxxp')}[://]{rest.replace('.', '[.]')}"
    return value.replace(".", "[.]")
