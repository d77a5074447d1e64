"""Refanging, normalisation and validation of single IOC values."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from foxhunt.model import IocType
from foxhunt.normalize import (
    InvalidIoc,
    defang,
    normalize_domain,
    normalize_hash,
    normalize_host,
    normalize_ioc,
    normalize_ip,
    normalize_ip_port,
    normalize_url,
    refang,
)

SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.mark.parametrize(
    ("defanged", "expected"),
    [
        ("evil[.]example[.]com", "evil.example.com"),
        ("evil(.)example(.)com", "evil.example.com"),
        ("evil{.}example[dot]com", "evil.example.com"),
        ("1.2.3.4[:]443", "1.2.3.4:443"),
        ("hxxp://evil[.]com/a", "http://evil.com/a"),
        ("hxxps://evil[.]com/a", "https://evil.com/a"),
        ("hxxps[:]//evil.com", "https://evil.com"),
        ("hxxp[://]evil.com", "http://evil.com"),
        ("  1.2.3.4:80\n", "1.2.3.4:80"),
        ("http://already.fine/x", "http://already.fine/x"),
        ("HXXP://evil[DOT]com", "http://evil.com"),
        ("FXP://evil.com/a", "ftp://evil.com/a"),
        ("hxxp://evil.com/a", "http://evil.com/a"),
        ("  plain.example.com ", "plain.example.com"),
    ],
)
def test_refang(defanged: str, expected: str) -> None:
    assert refang(defanged) == expected


def test_refang_only_rewrites_hxxp_as_the_scheme() -> None:
    assert refang("http://a.com/hxxp://b") == "http://a.com/hxxp://b"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1.2.3.4:443", "1.2.3.4:443"),
        ("1.2.3[.]4[:]8080", "1.2.3.4:8080"),
        ("[2001:DB8:0:0::1]:443", "[2001:db8::1]:443"),
        ("255.255.255.255:1", "255.255.255.255:1"),
        ("10.0.0.1:65535", "10.0.0.1:65535"),
    ],
)
def test_ip_port_is_canonical(raw: str, expected: str) -> None:
    assert normalize_ip_port(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("2001:db8::1:443", "ambiguous IPv6"),
        ("256.1.1.1:80", "not an IP address"),
        ("1.2.3.4:0", "out of range"),
        ("1.2.3.4:65536", "out of range"),
        ("1.2.3.4", "no port"),
        ("1.2.3.4:http", "not a number"),
        ("[2001:db8::1]", "without ':port'"),
        ("[fe80::1%eth0']:80", "scoped IPv6"),
        ("evil.com:80", "not an IP address"),
    ],
)
def test_bad_ip_port_is_rejected(raw: str, reason: str) -> None:
    with pytest.raises(InvalidIoc, match=reason):
        normalize_ip_port(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Evil.Example.COM", "evil.example.com"),
        ("evil.example.com.", "evil.example.com"),
        ("evil[.]example[.]com", "evil.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example.", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("a.xn--nxasmq6b.example", "a.xn--nxasmq6b.example"),
        ("1.2.3.4.example", "1.2.3.4.example"),
        ("x1.2.3.4.example", "x1.2.3.4.example"),
        ("under_score.example.com", "under_score.example.com"),
    ],
)
def test_domain_is_canonical(raw: str, expected: str) -> None:
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("exa☃mple.com", "internationalised"),
        ("localhost", "two labels"),
        ("1.2.3.4", "IP address is not a domain"),
        ("-bad.example.com", "not a valid host name"),
        ("bad..example.com", "not a valid host name"),
        ("evil\n.com", "not a valid host name"),
        ("has space.com", "not a valid host name"),
        ("example.123", "numeric"),
        (".", "empty"),
        ("a" * 64 + ".com", "not a valid host name"),
        ("xn--zz.com", "internationalised"),
        ("ok.xn--zz.com", "internationalised"),
        ("xn--ls8h.la", "internationalised"),  # valid Punycode, but an emoji: as "💩.la" is rejected too
        ("xn--a.example", "internationalised"),  # decodes to U+0080
        ("1.2.3.4.", "IP address is not a domain"),
        ("2001:db8::1", "IP address is not a domain"),
    ],
)
def test_bad_domain_is_rejected(raw: str, reason: str) -> None:
    with pytest.raises(InvalidIoc, match=reason):
        normalize_domain(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTP://Evil.EXAMPLE.com/Path/File.EXE?Q=A", "http://evil.example.com/Path/File.EXE?Q=A"),
        ("http://evil.com:80/a", "http://evil.com/a"),
        ("https://evil.com:443/a", "https://evil.com/a"),
        ("ftp://evil.com:21/a", "ftp://evil.com/a"),
        ("https://evil.com:80/a", "https://evil.com:80/a"),
        ("http://evil.com:8080/a", "http://evil.com:8080/a"),
        ("http://evil.com/a#fragment", "http://evil.com/a"),
        ("http://evil.com", "http://evil.com/"),
        ("http://evil.com?x=1", "http://evil.com/?x=1"),
        ("http://user:pw@evil.com/a", "http://evil.com/a"),
        ("http://evil.com./a", "http://evil.com/a"),
        ("http://1.2.3.4:80/bins/x.sh", "http://1.2.3.4/bins/x.sh"),
        ("http://[2001:DB8::1]:8080/x", "http://[2001:db8::1]:8080/x"),
        ("http://bücher.example/x", "http://xn--bcher-kva.example/x"),
        ("hxxps://evil[.]com/Login", "https://evil.com/Login"),
        ("http://1drv.ms/x", "http://1drv.ms/x"),
        ("http://xn--bcher-kva.example/", "http://xn--bcher-kva.example/"),
        ("http://evil.com/" + "a" * 8176, "http://evil.com/" + "a" * 8176),
    ],
)
def test_url_is_canonical(raw: str, expected: str) -> None:
    assert normalize_url(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("http://evil.com:0/", "out of range"),
        ("http://evil.com:65536/", "not a valid URL"),
        ("http://evil.com/a b", "white space"),
        ("evil.com/path", "scheme and a host"),
        ("http:///path", "scheme and a host"),
        ("http://evil.com:abc/", "not a valid URL"),
        ("http://-evil.com/", "not a valid host name"),
        ("http://exa☃mple.com/", "internationalised"),
        ("http://[fe80::1%25eth0]/", "scoped IPv6"),
        ("http://xn--zz.com/", "internationalised"),
        ("http://10.0.0.1./x", "IP address is not a domain"),
        ("http://evil.com/a\x00b", "control character"),
        ("\x00http://evil.com/", "control character"),
        ("http://evil.com/\x1b[0m", "control character"),
        ("http://evil.com/\x7f", "control character"),
        ("http://evil.com/\x9b", "control character"),
        ("http://evil.com/a\tb", "white space"),
        ("http://evil.com/" + "a" * 8177, "URL longer than 8192 characters: 8193"),
    ],
)
def test_bad_url_is_rejected(raw: str, reason: str) -> None:
    with pytest.raises(InvalidIoc, match=reason):
        normalize_url(raw)


def test_hash_is_lower_cased() -> None:
    assert normalize_hash(SHA256.upper(), IocType.SHA256) == SHA256
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    assert normalize_hash(md5.upper(), IocType.MD5) == md5


@pytest.mark.parametrize(
    ("raw", "ioc_type", "reason"),
    [
        (SHA256[:-1], IocType.SHA256, "sha256_hash must be 64 hex characters, got 63"),
        (SHA256 + "0", IocType.SHA256, "sha256_hash must be 64 hex characters, got 65"),
        (SHA256, IocType.MD5, "md5_hash must be 32 hex characters, got 64"),
        ("", IocType.MD5, "md5_hash must be 32 hex characters, got 0"),
        ("z" * 40, IocType.SHA1, "sha1_hash is not hexadecimal"),
        ("g" + "0" * 31, IocType.MD5, "md5_hash is not hexadecimal"),
        ("0" * 31 + "\n", IocType.MD5, "md5_hash must be 32 hex characters, got 31"),
    ],
)
def test_bad_hash_is_rejected(raw: str, ioc_type: IocType, reason: str) -> None:
    with pytest.raises(InvalidIoc, match=reason) as raised:
        normalize_hash(raw, ioc_type)
    assert "got 32" not in str(raised.value)


@pytest.mark.parametrize("ioc_type", list(IocType))
@pytest.mark.parametrize("control", ["\x00", "\x01", "\x08", "\x1b", "\x7f"])
def test_control_characters_are_never_part_of_an_ioc(ioc_type: IocType, control: str) -> None:
    valid = {
        IocType.IP_PORT: "1.2.3.4:80",
        IocType.DOMAIN: "evil.example.com",
        IocType.URL: "http://evil.example.com/a",
        IocType.MD5: "0" * 32,
        IocType.SHA1: "0" * 40,
        IocType.SHA256: "0" * 64,
    }[ioc_type]
    for raw in (valid[:3] + control + valid[3:], valid + control, control + valid):
        with pytest.raises(InvalidIoc):
            normalize_ioc(raw, ioc_type)


def test_ip_fast_path_agrees_with_ipaddress() -> None:
    parts = ["0", "1", "9", "10", "01", "00", "99", "100", "199", "200", "249", "250", "255", "256", "300"]
    for octets in itertools.product(parts, repeat=4):
        if len(set(octets)) > 2 and octets[0] not in ("0", "01", "255"):
            continue  # enough: every octet form in every position
        text = ".".join(octets)
        try:
            expected = ipaddress.ip_address(text).compressed
        except ValueError:
            with pytest.raises(InvalidIoc):
                normalize_ip(text)
        else:
            assert normalize_ip(text) == expected
            assert normalize_host(text) == expected
    for odd in ("1.2.3", "1.2.3.4.5", "1.2.3.4 ", "\u0661.2.3.4", "1.2.3.4\n", "0x1.2.3.4"):
        with pytest.raises(InvalidIoc):
            normalize_ip(odd)


@pytest.mark.parametrize(
    ("raw", "ioc_type", "expected"),
    [
        ("1.2.3.4[:]80", IocType.IP_PORT, "1.2.3.4:80"),
        ("Evil.com.", IocType.DOMAIN, "evil.com"),
        ("hxxp://Evil.com", IocType.URL, "http://evil.com/"),
        (SHA256.upper(), IocType.SHA256, SHA256),
        ("A" * 40, IocType.SHA1, "a" * 40),
    ],
)
def test_normalize_ioc_dispatches_on_type(raw: str, ioc_type: IocType, expected: str) -> None:
    assert normalize_ioc(raw, ioc_type) == expected


def test_defang_round_trips_through_refang() -> None:
    url = "http://evil.example.com/a.php"
    assert defang(url) == "hxxp[://]evil[.]example[.]com/a[.]php"
    assert refang(defang(url)) == url
    # a host hidden in the path is defanged too (a real ThreatFox IOC looks like this)
    odd = "https://https//deadonsecure.com/dpixel"
    assert "deadonsecure.com" not in defang(odd)
    assert refang(defang(odd)) == odd
