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
# every _REFANG pattern needs a bracket or an hx / fx scheme start: values without one skip the five passes
_MAY_BE_DEFANGED = re.compile(r"[\[({]|^[hf]x", re.IGNORECASE).search
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}").fullmatch  # dotted quad, no leading zeros
_SPACE = re.compile(r"\s").search  # the characters str.isspace() accepts
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]").search  # C0, DEL and C1 control characters

DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")
_LABEL_TEXT = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
# every label of a name at once (one regex call, not one per label): _LABEL, with single dots between
_HOST_NAME = re.compile(rf"(?:{_LABEL_TEXT}\.)*{_LABEL_TEXT}").fullmatch
_HEX = re.compile(r"[0-9a-f]+").fullmatch
HASH_LENGTHS = {IocType.MD5: 32, IocType.SHA1: 40, IocType.SHA256: 64}
MAX_URL_LENGTH = 8192  # RFC 9110 asks for URLs of 8,000 octets to work; a longer value is junk, not an IOC


def refang(value: str) -> str:
    """Undo the usual defanging: ``[.]``, ``(.)``, ``[:]``, ``hxxp(s)://``."""
    value = value.strip()
    if not _MAY_BE_DEFANGED(value):
        return value
    for pattern, replacement in _REFANG:
        value = pattern.sub(replacement, value)
    return value


def normalize_ip(value: str) -> str:
    """Canonical text of an IPv4 or IPv6 address (IPv6 compressed, lower-case)."""
    if _CANONICAL_IPV4(value):  # the common case, already canonical: no need for ipaddress
        return value
    if "%" in value:
        raise InvalidIoc(f"scoped IPv6 address (with %zone) is not an IOC: {value!r}")
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        raise InvalidIoc(f"not an IP address: {value!r}") from None


def _may_be_ip(name: str) -> bool:
    """False when `name` cannot be an IP address: an IPv4 ends with a digit, an IPv6 has a colon."""
    return ":" in name or name[-1:].isdigit()


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
    if _may_be_ip(name):
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
    if len(name) > 253 or not _HOST_NAME(name):
        raise InvalidIoc(f"not a valid host name: {value!r}")
    if labels[-1].isdigit():
        raise InvalidIoc(f"top-level label is numeric: {value!r}")
    if "xn--" in name:
        for label in labels:
            if label.startswith("xn--"):
                _check_a_label(label, value)
    return name


def _check_a_label(label: str, value: str) -> None:
    """An ``xn--`` label must decode to a valid U-label (the rule Unicode input is held to)."""
    try:
        idna.decode(label)
    except UnicodeError as exc:  # idna.IDNAError is one
        raise InvalidIoc(f"not a valid internationalised domain name: {value!r} ({label}: {exc})") from None


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
    if _may_be_ip(host):
        try:
            return ipaddress.ip_address(host).compressed
        except ValueError:
            pass
    return normalize_domain(host, min_labels=1)


def normalize_url(value: str) -> str:
    """``scheme://host[:port]/path[?query]``: scheme and host lower-cased, default port, userinfo and
    fragment dropped, empty path written ``/``, path and query case kept."""
    raw = refang(value)
    if len(raw) > MAX_URL_LENGTH:
        raise InvalidIoc(f"URL longer than {MAX_URL_LENGTH} characters: {len(raw)}")
    if _SPACE(raw):
        raise InvalidIoc(f"URL contains white space: {value!r}")
    if _CONTROL(raw):  # urlsplit would silently drop some of them
        raise InvalidIoc(f"URL contains a control character: {value!r}")
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
    if len(digest) != expected:
        raise InvalidIoc(f"{ioc_type.value} must be {expected} hex characters, got {len(digest)}: {value!r}")
    if not _HEX(digest):
        raise InvalidIoc(f"{ioc_type.value} is not hexadecimal: {value!r}")
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
