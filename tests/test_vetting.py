"""IOC vetting: warninglist policy verdicts, the allowlist, expiry and confidence, the index, the CLI."""

from __future__ import annotations

import ipaddress
import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from foxhunt.catalog import load_catalog
from foxhunt.cli.vet_command import vet_command
from foxhunt.feeds import read_feeds
from foxhunt.model import Ioc, IocType
from foxhunt.normalize import normalize_ioc
from foxhunt.vetting import (
    DROP,
    FLAG,
    KEEP,
    AllowlistError,
    MaxAge,
    MaxAgeError,
    PolicyError,
    Vetter,
    load_allowlist,
    load_policy,
    parse_allowlist,
    warninglists,
)
from foxhunt.vetting.expiry import parse_age
from foxhunt.vetting.policy import MATCH_KINDS
from foxhunt.vetting.warninglists import (
    available_lists,
    build_index,
    is_registered_domain,
    parse_range,
    special_use_properties,
    url_host,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
EMPTY_SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
REAL_SHA256 = "4f0a5b7f9e36a4cfd6a1d1b8c8e2b8d7a6c1f0e9d8c7b6a5f4e3d2c1b0a99887"


@pytest.fixture(scope="module", autouse=True)
def _no_disk_cache() -> Iterator[None]:
    """The index is built in this process (the disk cache has its own test, in a temporary folder)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FOXHUNT_CACHE_DIR", "off")
        yield


def ioc(
    ioc_type: str,
    value: str,
    *,
    confidence: int | None = 100,
    first_seen: datetime | None = NOW - timedelta(days=1),
    last_seen: datetime | None = None,
    malware: str = "win.test",
) -> Ioc:
    kind = IocType(ioc_type)
    return Ioc(
        kind, normalize_ioc(value, kind), malware, malware.split(".")[-1].title(), "botnet_cc",
        confidence=confidence, first_seen=first_seen, last_seen=last_seen,
    )  # fmt: skip


@pytest.fixture(scope="module")
def vetter() -> Vetter:
    return Vetter(now=NOW)


# ---- the feed cases of the issue -----------------------------------------------------------------

FEED_CASES = [
    # (ioc_type, value, verdict, a reason that must be among the reasons)
    ("ip:port", "8.8.8.8:53", DROP, "public-dns-v4"),
    ("ip:port", "1.1.1.1:443", DROP, "public-dns-v4"),
    ("ip:port", "10.0.0.5:4444", DROP, "rfc1918"),
    ("ip:port", "10.0.0.5:4444", DROP, "foxhunt-special-use-ip"),
    ("ip:port", "192.0.2.1:80", DROP, "rfc5735"),
    ("ip:port", "192.0.2.1:80", DROP, "foxhunt-special-use-ip"),
    ("ip:port", "100.64.1.1:8080", DROP, "rfc6598"),
    ("ip:port", "[2001:db8::1]:443", DROP, "rfc3849"),
    ("ip:port", "[2001:db8::1]:443", DROP, "foxhunt-special-use-ip"),
    ("ip:port", "127.0.0.1:4444", DROP, "foxhunt-special-use-ip"),
    ("ip:port", "169.254.169.254:80", DROP, "foxhunt-special-use-ip"),
    ("ip:port", "224.0.0.251:5353", DROP, "multicast"),
    ("ip:port", "[fe80::1]:443", DROP, "ipv6-linklocal"),
    ("ip:port", "[fd12:3456::1]:443", DROP, "foxhunt-special-use-ip"),
    ("domain", "google.com", DROP, "tranco10k"),
    ("domain", "duckdns.org", DROP, "second-level-tlds"),
    ("domain", "printer.local", DROP, "foxhunt-special-use-names"),
    ("domain", "www.example.com", DROP, "rfc6761"),
    ("md5_hash", EMPTY_MD5, DROP, "foxhunt-empty-file"),
    ("md5_hash", EMPTY_MD5, DROP, "empty-hashes"),
    ("sha1_hash", EMPTY_SHA1, DROP, "foxhunt-empty-file"),
    ("sha256_hash", EMPTY_SHA256, DROP, "foxhunt-empty-file"),
    ("url", "http://192.168.1.20/bins/mips", DROP, "rfc1918"),
    ("url", "http://localhost:8080/a.exe", DROP, "foxhunt-special-use-names"),
    ("url", "https://bit.ly/3xYzAbC", FLAG, "url-shortener"),
    ("domain", "x.duckdns.org", FLAG, "dynamic-dns"),
    ("url", "https://raw.githubusercontent.com/evil/loader/main/stage2.ps1", FLAG, "lots-project"),
    ("url", "https://raw.githubusercontent.com/evil/loader/main/stage2.ps1", FLAG, "foxhunt-shared-hosting"),
    ("domain", "drive.google.com", FLAG, "google"),
    ("url", "https://drive.google.com/uc?export=download&id=1AbC", FLAG, "foxhunt-shared-hosting"),
    ("domain", "evil.sytes.net", FLAG, "dynamic-dns"),
    ("ip:port", "104.16.1.1:8080", FLAG, "cloudflare"),
    ("domain", "reseptors.com", KEEP, None),  # IcedID C2, ThreatFox 2022-02-19
    ("ip:port", "185.215.113.26:505", KEEP, None),  # RedLine Stealer C2
    ("url", "http://reseptors.com/gate.php", KEEP, None),
    ("sha256_hash", REAL_SHA256, KEEP, None),
]


def write_feed(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A ThreatFox API answer with these (ioc_type, value) rows, seen yesterday."""
    data = [
        {
            "id": str(5000 + n), "ioc": value, "ioc_type": ioc_type, "threat_type": "botnet_cc",
            "malware": "win.test", "malware_printable": "Test", "malware_alias": None,
            "confidence_level": 90, "first_seen": "2026-11-19 10:00:00 UTC", "last_seen": None,
            "reporter": "fixture", "tags": None,
        }
        for n, (ioc_type, value) in enumerate(rows)
    ]  # fmt: skip
    path.write_text(json.dumps({"query_status": "ok", "data": data}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def feed_verdicts(vetter: Vetter, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    rows = list(dict.fromkeys((t, v) for t, v, _, _ in FEED_CASES))
    feed = read_feeds([write_feed(tmp_path_factory.mktemp("vet") / "feed.json", rows)])
    assert not feed.rejects and len(feed.iocs) == len(rows)
    return {i.value: vetter.vet(i) for i in feed.iocs}


@pytest.mark.parametrize(("ioc_type", "value", "expected", "reason"), FEED_CASES)
def test_feed_case_verdicts(
    feed_verdicts: dict, ioc_type: str, value: str, expected: str, reason: str | None
) -> None:
    verdict = feed_verdicts[normalize_ioc(value, IocType(ioc_type))]
    assert verdict.verdict == expected, (value, verdict.reasons, verdict.matches)
    if reason is None:
        assert verdict.reasons == ()
    else:
        assert reason in verdict.reasons, (value, verdict.reasons)


def test_a_top_site_registered_domain_drops_but_its_subdomain_and_urls_only_flag(vetter: Vetter) -> None:
    assert vetter.vet(ioc("domain", "google.com")).verdict == DROP
    sub = vetter.vet(ioc("domain", "mail.google.com"))
    assert sub.verdict == FLAG
    assert {m.kind for m in sub.matches} >= {"subdomain"}
    url = vetter.vet(ioc("url", "https://google.com/url?q=https://evil.example.net"))
    assert url.verdict == FLAG
    assert {m.kind for m in url.matches} == {"url-host"}


def test_an_ip_only_in_a_popular_list_is_not_a_reason_for_a_url_on_a_popular_site(vetter: Vetter) -> None:
    """Tranco's top million flags a domain IOC; a payload URL on such a (compromised) site keeps its severity."""
    name = next(
        n for n in ("0-1.jp", "0-24.jp", "0-55bmw.vip") if vetter.vet(ioc("domain", n)).reasons == ("tranco",)
    )
    assert vetter.vet(ioc("domain", name)).verdict == FLAG
    assert vetter.vet(ioc("url", f"http://{name}/wp-content/plugins/x/payload.exe")).verdict == KEEP


def test_vet_all_keeps_urls_as_urls_and_splits_the_result(vetter: Vetter) -> None:
    iocs = [
        ioc("url", "https://raw.githubusercontent.com/evil/loader/main/stage2.ps1"),
        ioc("ip:port", "8.8.8.8:53"),
        ioc("domain", "reseptors.com"),
        ioc("url", "http://10.1.2.3/x.exe"),
    ]
    result = vetter.vet_all(iocs)
    assert [i.value for i in result.kept] == [iocs[0].value, iocs[2].value]
    assert result.kept[0].ioc_type is IocType.URL  # never turned into its host
    assert not any(
        i.ioc_type is IocType.DOMAIN and i.value == "raw.githubusercontent.com" for i in result.kept
    )
    assert set(result.flagged) == {iocs[0].value}
    assert "lots-project" in result.flagged[iocs[0].value]
    assert [v.ioc.value for v in result.dropped] == ["8.8.8.8:53", "http://10.1.2.3/x.exe"]
    assert result.counts() == {KEEP: 1, FLAG: 1, DROP: 2}
    assert result.reason_counts()[(DROP, "public-dns-v4")] == 1


def test_verdict_json_and_notes(vetter: Vetter) -> None:
    verdict = vetter.vet(ioc("url", "https://bit.ly/3xYzAbC", malware="win.agent_tesla"))
    assert verdict.to_json() == {
        "ioc": "https://bit.ly/3xYzAbC",
        "ioc_type": "url",
        "family": "Agent_Tesla",
        "verdict": FLAG,
        "reasons": list(verdict.reasons),
    }
    assert vetter.note(verdict).startswith("flagged: ")
    assert "url-shortener (link-in-bio, url-shortener)" in vetter.note(verdict)
    assert "URL Shorteners" in vetter.describe("url-shortener")
    assert vetter.note(vetter.vet(ioc("domain", "reseptors.com"))) == ""


def test_special_use_matches_name_the_range_and_what_ipaddress_says(vetter: Vetter) -> None:
    match = next(
        m for m in vetter.vet(ioc("ip:port", "10.0.0.5:4444")).matches if m.name == "foxhunt-special-use-ip"
    )
    assert match.entry == "10.0.0.0/8 (private)"
    match = next(
        m for m in vetter.vet(ioc("ip:port", "100.64.1.1:80")).matches if m.name == "foxhunt-special-use-ip"
    )
    assert match.entry == "100.64.0.0/10 (shared)"


def _properties_flag(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return bool(special_use_properties(str(address)))


NEWER_THAN_IPADDRESS = ("2002::/16", "3fff::/20")  # 6to4 (deprecated), documentation (RFC 9637, 2024)
SPECIAL_IPV6_SAMPLES = ("::", "::1", "::ffff:10.0.0.1", "64:ff9b::1", "64:ff9b:1::1", "100::1", "2001::1",
                        "2001:2::1", "2001:10::1", "2001:db8::1", "fc00::1", "fd12::1", "fe80::1", "fec0::1",
                        "ff02::1", "ff05::1:3")  # fmt: skip


def test_the_special_use_ranges_cover_every_address_ipaddress_calls_special() -> None:
    """The builtin ranges are data; Python's ipaddress properties check that they are complete: the first
    address of every IPv4 /16 and IPv6 /12, every address of the small special IPv4 blocks, addresses in
    the small special IPv6 blocks, and 10,000 random addresses of each version."""
    policy = load_policy()
    ranges = [parse_range(e) for e in policy.builtin_lists["foxhunt-special-use-ip"].entries]
    by_version = {4: [(a, b) for v, a, b in ranges if v == 4], 6: [(a, b) for v, a, b in ranges if v == 6]}

    def covered(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(a <= int(address) <= b for a, b in by_version[address.version])

    rng = random.Random(7)
    samples: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    samples += [ipaddress.IPv4Address(block << 16) for block in range(1 << 16)]
    samples += [ipaddress.IPv6Address(block << 116) for block in range(1 << 12)]
    for small in ("192.0.0.0/24", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "255.255.255.0/24"):
        samples.extend(ipaddress.ip_network(small))
    samples += [ipaddress.IPv6Address(a) for a in SPECIAL_IPV6_SAMPLES]
    samples += [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(10_000)]
    samples += [ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(10_000)]
    missed = [str(a) for a in samples if _properties_flag(a) and not covered(a)]
    assert not missed, missed[:10]
    # and every builtin range starts with an address ipaddress calls special (or is newer than it)
    newer = [ipaddress.ip_network(n) for n in NEWER_THAN_IPADDRESS]
    for version, first, _ in ranges:
        address = ipaddress.IPv4Address(first) if version == 4 else ipaddress.IPv6Address(first)
        assert _properties_flag(address) or any(address in n for n in newer), address


def test_public_addresses_are_not_special(vetter: Vetter) -> None:
    for value in ("185.215.113.26:505", "[2a03:2880:f003::1]:443", "45.9.20.32:443"):
        assert not any(m.category == "special-use" for m in vetter.vet(ioc("ip:port", value)).matches)


# ---- the index -------------------------------------------------------------------------------------


def test_registered_domains() -> None:
    assert is_registered_domain("google.com")
    assert is_registered_domain("example.co.uk")
    assert is_registered_domain("x.duckdns.org")  # duckdns.org is a public suffix
    assert not is_registered_domain("mail.google.com")
    assert not is_registered_domain("co.uk")
    assert not is_registered_domain("duckdns.org")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://a.b.example.com/x", "a.b.example.com"),
        ("https://a.example.com:8443/x?y=1", "a.example.com"),
        ("http://[2001:db8::1]:8080/a", "2001:db8::1"),
        ("http://1.2.3.4/", "1.2.3.4"),
        ("ftp://h.example/file", "h.example"),
    ],
)
def test_url_host(url: str, host: str) -> None:
    assert url_host(url) == host


def test_index_entries_of_every_shape(vetter: Vetter) -> None:
    index = vetter.index
    lists = {info.name: info for info in index.lists}
    assert set(lists) >= {
        "rfc1918",
        "public-dns-v4",
        "tranco",
        "dynamic-dns",
        "empty-hashes",
        "url-shortener",
    }
    assert "university_domains" not in lists  # informational: not indexed at all
    assert lists["public-dns-v4"].entries > 10_000
    assert "duckdns.org" in index.names  # ".duckdns.org" in dynamic-dns, leading dot dropped
    assert EMPTY_MD5 in index.hashes
    assert all(info.source in ("misp", "foxhunt") for info in index.lists)
    # an address entry without a prefix length, as in public-dns-v4 and ovh-cluster
    match = next(m for m in vetter.vet(ioc("ip:port", "8.8.8.8:53")).matches if m.name == "public-dns-v4")
    assert match.entry == "8.8.8.8"


def test_overlapping_ranges_of_several_lists_are_all_reported(vetter: Vetter) -> None:
    names = set(vetter.vet(ioc("ip:port", "10.1.2.3:80")).reasons)
    assert {"rfc1918", "rfc5735", "foxhunt-special-use-ip"} <= names


def test_the_shipped_lists_the_policy_relies_on_exist_and_act_as_the_issue_says() -> None:
    policy = load_policy()
    expected = {
        "rfc1918": DROP, "rfc5735": DROP, "rfc6598": DROP, "rfc3849": DROP, "rfc6761": DROP,
        "multicast": DROP, "ipv6-linklocal": DROP, "public-dns-v4": DROP, "public-dns-v6": DROP,
        "empty-hashes": DROP, "common-ioc-false-positive": DROP, "ti-falsepositives": DROP,
        "url-shortener": FLAG, "dynamic-dns": FLAG, "lots-project": FLAG, "amazon-aws": FLAG,
        "cloudflare": FLAG, "vpn-ipv4": FLAG,
    }  # fmt: skip
    assert set(expected) <= available_lists()
    for name, action in expected.items():
        kind = "hash" if "hash" in name or "false" in name else "ip" if name[0] in "rmpicv" else "domain"
        assert (
            policy.action(name, kind if name not in ("url-shortener", "lots-project") else "url-host")
            == action
        )
    assert policy.category_of("bank-website").action == "ignore"
    assert policy.category_of("a-list-added-upstream-later").name == "informational"


def silent_categories() -> str:
    """A policy fragment that silences every category but special-use: a small index, built fast."""
    silent = ", ".join(f"{kind}: ignore" for kind in MATCH_KINDS)
    lines = [
        f"  {name}: {{action: drop}}"
        if name == "special-use"
        else f"  {name}: {{action: ignore, on: {{{silent}}}}}"
        for name in load_policy().categories
    ]
    return "categories:\n" + "\n".join(lines) + "\n"


def test_disk_cache_round_trip(tmp_path: Path) -> None:
    small = tmp_path / "small.yaml"
    small.write_text(silent_categories(), encoding="utf-8")
    policy = load_policy(small)
    first = build_index(policy, tmp_path / "cache")
    assert not first.from_cache
    assert list((tmp_path / "cache").glob("warninglists-*.pickle"))
    second = warninglists._build.__wrapped__(
        *warninglists.index_spec(policy), tmp_path / "cache"
    )  # not the LRU
    assert second.from_cache
    assert [i.name for i in second.lists] == [i.name for i in first.lists]
    assert {i.name for i in first.lists} == {
        "rfc1918",
        "rfc5735",
        "rfc6598",
        "rfc3849",
        "rfc6761",
        "multicast",
        "ipv6-linklocal",
        "foxhunt-special-use-ip",
        "foxhunt-special-use-names",
    }
    vetter = Vetter(policy, now=NOW)
    assert vetter.vet(ioc("ip:port", "10.0.0.5:4444")).verdict == DROP
    assert vetter.vet(ioc("ip:port", "8.8.8.8:53")).verdict == KEEP


# ---- the policy ------------------------------------------------------------------------------------


def test_a_user_policy_turns_a_drop_into_a_flag(tmp_path: Path) -> None:
    override = tmp_path / "policy.yaml"
    override.write_text("categories:\n  public-dns:\n    action: flag\n", encoding="utf-8")
    vetter = Vetter(load_policy(override), now=NOW)
    verdict = vetter.vet(ioc("ip:port", "1.1.1.1:443"))
    assert verdict.verdict == FLAG
    assert "public-dns-v4" in verdict.reasons
    assert vetter.vet(ioc("ip:port", "10.0.0.5:4444")).verdict == DROP  # the rest of the policy is as shipped


def test_a_user_policy_moves_a_list_to_another_category(tmp_path: Path) -> None:
    override = tmp_path / "policy.yaml"
    override.write_text("lists:\n  vpn-ipv4: sinkhole\n", encoding="utf-8")
    vetter = Vetter(load_policy(override), now=NOW)
    match = next(m for m in vetter.vet(ioc("ip:port", "8.8.8.8:53")).matches if m.name == "vpn-ipv4")
    assert (match.category, match.action) == ("sinkhole", FLAG)


def test_a_user_policy_adds_a_builtin_list(tmp_path: Path) -> None:
    override = tmp_path / "policy.yaml"
    override.write_text(
        f"{silent_categories()}"
        "builtin_lists:\n  corp-sinkholes:\n    description: Our sinkhole\n    category: sinkhole\n"
        "    type: cidr\n    entries: [203.0.113.77/32, 198.51.100.0/25]\n"
        "lists:\n  corp-sinkholes: special-use\n",
        encoding="utf-8",
    )
    vetter = Vetter(load_policy(override), now=NOW)
    verdict = vetter.vet(ioc("ip:port", "203.0.113.77:80"))
    assert verdict.verdict == DROP
    assert set(verdict.reasons) == {"foxhunt-special-use-ip", "corp-sinkholes", "rfc5735"}
    assert vetter.describe("corp-sinkholes") == (
        "corp-sinkholes: corp-sinkholes (foxhunt builtin list, category special-use)"
    )


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("categories:\n  public-dns:\n    action: block\n", 3, "'block' is not one of drop, flag, ignore"),
        ("categories:\n  public-dns:\n    on: {everything: flag}\n", 3, "unknown match kind 'everything'"),
        ("lists:\n  tranco: top-site\n", 2, "unknown category 'top-site'"),
        ("lists:\n  trancoo: top-sites\n", 2, "unknown warninglist 'trancoo'"),
        ("categroies: {}\n", 1, "unknown key 'categroies'"),
        ("categories:\n  brand-new:\n    description: x\n", 3, "needs an action"),
        ("lists: [tranco]\n", 1, "lists must be a mapping"),
        ("categories:\n  a: {action: drop\n", 3, "invalid YAML"),
        (
            "builtin_lists:\n  mine:\n    description: x\n    category: cloud-cdn\n    type: cidr\n"
            "    entries:\n      - 192.0.2.0/24\n      - 192.0.2.0/33\n",
            8,
            "builtin list 'mine': bad cidr entry '192.0.2.0/33'",
        ),
        (
            "builtin_lists:\n  mine:\n    description: x\n    category: nowhere\n    type: hostname\n"
            "    entries: [a.example]\n",
            2,
            "unknown category 'nowhere'",
        ),
    ],
)
def test_bad_policy_files_name_the_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}:{line}: "), str(caught.value)
    assert message in str(caught.value)


# ---- the allowlist ---------------------------------------------------------------------------------

ALLOWLIST = """\
# the organisation's allowlist
domains:
  - corp.example
  - "*.partner.example"
cidrs: [198.51.100.0/24, "2001:db8:10::/48"]
urls:
  - https://cdn.vendor.example/updates/
hashes:
  - 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08
exclusions:
  DeviceNetworkEvents:
    - >-
      InitiatingProcessFileName in~ ("msiexec.exe")
      and RemoteUrl endswith ".windowsupdate.com"
  CommonSecurityLog:
    - DestinationHostName in~ ("log01.corp.example", "log02.corp.example")
    - DestinationPort == 514 and DestinationIP == "198.51.100.10"
"""


@pytest.fixture(scope="module")
def allowlisted(tmp_path_factory: pytest.TempPathFactory) -> Vetter:
    path = tmp_path_factory.mktemp("allow") / "allowlist.yaml"
    path.write_text(ALLOWLIST, encoding="utf-8")
    return Vetter(allowlist=load_allowlist(path), now=NOW)


@pytest.mark.parametrize(
    ("ioc_type", "value", "entry"),
    [
        ("domain", "vpn.corp.example", "corp.example"),  # a subdomain of an allowlisted parent
        ("domain", "corp.example", "corp.example"),
        ("domain", "a.b.partner.example", "partner.example"),
        ("url", "https://intranet.corp.example/login", "corp.example"),
        ("ip:port", "198.51.100.23:443", "198.51.100.0/24"),
        ("ip:port", "[2001:db8:10::5]:443", "2001:db8:10::/48"),
        ("url", "http://198.51.100.9/x", "198.51.100.0/24"),
        ("url", "https://cdn.vendor.example/updates/agent-1.2.msi", "https://cdn.vendor.example/updates/"),
        ("sha256_hash", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", None),
    ],
)
def test_allowlisted_iocs_leave_the_pack(
    allowlisted: Vetter, ioc_type: str, value: str, entry: str | None
) -> None:
    item = ioc(ioc_type, value)
    verdict = allowlisted.vet(item)
    assert verdict.verdict == DROP
    assert verdict.reasons[0] == "allowlist"
    assert verdict.matches[0].entry == (entry or item.value)
    assert allowlisted.allowlist.match(item) == (entry or item.value)
    assert allowlisted.vet_all([item]).kept == []


@pytest.mark.parametrize(
    ("ioc_type", "value"),
    [
        ("domain", "corp.example.evil.net"),  # never a substring
        ("domain", "notcorp.example"),
        ("ip:port", "198.51.101.1:443"),
        ("url", "https://cdn.vendor.example/other/agent.msi"),
        ("url", "http://cdn.vendor.example/updates/agent.msi"),  # the prefix names https
    ],
)
def test_near_misses_of_the_allowlist_stay(allowlisted: Vetter, ioc_type: str, value: str) -> None:
    assert "allowlist" not in allowlisted.vet(ioc(ioc_type, value)).reasons


def test_exclusions_compile_to_a_where_not_per_table(allowlisted: Vetter) -> None:
    allowlist = allowlisted.allowlist
    assert allowlist.kql_filter("DnsEvents") == ""
    assert allowlist.exclusion("DeviceNetworkEvents") == (
        '(InitiatingProcessFileName in~ ("msiexec.exe") and RemoteUrl endswith ".windowsupdate.com")'
    )
    assert allowlist.kql_filter("CommonSecurityLog") == (
        '| where not(coalesce((DestinationHostName in~ ("log01.corp.example", "log02.corp.example")) or '
        '(DestinationPort == 514 and DestinationIP == "198.51.100.10"), false))'
    )


def test_exclusions_are_valid_kql_on_the_real_schemas(allowlisted: Vetter, kql_oracle) -> None:
    catalog = load_catalog()
    for platform in ("sentinel", "defender"):
        queries = [
            (table, f"{table}\n| where {catalog[table].time_column(platform)} > ago(1d)\n"
             f"{allowlisted.allowlist.kql_filter(table)}")
            for table in allowlisted.allowlist.exclusions
            if platform in catalog[table].platforms
        ]  # fmt: skip
        assert queries
        for query_id, diagnostics in kql_oracle.check(queries, platform=platform).items():
            assert not [d for d in diagnostics if d.is_error], (platform, query_id, diagnostics)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("domians: [a.example]\n", 1, "unknown key 'domians'"),
        ("domains:\n  - ok.example\n  - bad_domain..example\n", 3, "domains:"),
        ("cidrs:\n  - 10.0.0.0/8\n  - 10.0.0.1/8\n", 3, "cidrs: not an address or CIDR range"),
        ("cidrs:\n  - 300.1.2.3\n", 2, "cidrs: not an address or CIDR range"),
        ("urls:\n  - cdn.vendor.example/updates/\n", 2, "urls: URL needs a scheme"),
        ("hashes:\n  - abc123\n", 2, "is not an MD5, SHA-1 or SHA-256"),
        ("domains: corp.example\n", 1, "domains must be a list"),
        ("domains:\n  - 42\n", 2, "must be text; quote '42'"),
        (
            "exclusions:\n  DeviceNetworkEvent:\n    - RemotePort == 1\n",
            2,
            "unknown table 'DeviceNetworkEvent'",
        ),
        ("exclusions:\n  DnsEvents:\n    - ''\n", 3, "empty expression"),
        (
            "exclusions:\n  DnsEvents:\n    - Name endswith 'corp.example'\n    - Nmae == 'x'\n",
            4,
            "'Nmae' is not a column",
        ),
        ("exclusions:\n  DeviceNetworkEvents:\n    - (RemotePort == 1\n", 3, "unclosed '('"),
        ('exclusions:\n  DeviceNetworkEvents:\n    - RemoteUrl == "x\n', 3, "unterminated string"),
        ("exclusions:\n  DeviceNetworkEvents:\n    - RemotePort == 1 | take 1\n", 3, "'|' is not allowed"),
        (
            "exclusions:\n  DeviceNetworkEvents:\n    - Timestamp > ago(1d)\n",
            3,
            "'Timestamp' is not a column",
        ),
        ("domains: [a.example]\ndomains: [b.example]\n", 2, "duplicate key 'domains' (first on line 1)"),
        ("domains: [a.example\n", 2, "invalid YAML"),
    ],
)
def test_bad_allowlist_files_name_the_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "allowlist.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AllowlistError) as caught:
        load_allowlist(path)
    assert str(caught.value).startswith(f"{path}:{line}: "), str(caught.value)
    assert message in str(caught.value)


def test_an_empty_allowlist_and_a_missing_file() -> None:
    assert parse_allowlist("").empty
    assert parse_allowlist("# nothing yet\n").empty
    with pytest.raises(AllowlistError, match="cannot read the file"):
        load_allowlist(Path("/nonexistent/allowlist.yaml"))


# ---- expiry and confidence ------------------------------------------------------------------------


def test_max_age_is_measured_from_last_seen_else_first_seen(vetter: Vetter) -> None:
    old, recent = NOW - timedelta(days=40), NOW - timedelta(days=5)
    stale = vetter.vet(
        ioc("ip:port", "185.215.113.26:505", first_seen=old - timedelta(days=10), last_seen=old)
    )
    assert (stale.verdict, stale.reasons) == (DROP, ("max-age",))
    assert stale.matches[0].entry == "last (else first) seen more than 30d ago"
    assert vetter.vet(ioc("ip:port", "185.215.113.26:505", first_seen=old, last_seen=recent)).verdict == KEEP
    assert vetter.vet(ioc("ip:port", "185.215.113.26:505", first_seen=old, last_seen=None)).verdict == DROP
    assert vetter.vet(ioc("ip:port", "185.215.113.26:505", first_seen=None, last_seen=None)).verdict == KEEP
    assert vetter.vet(ioc("domain", "reseptors.com", first_seen=NOW - timedelta(days=60))).verdict == KEEP
    assert vetter.vet(ioc("domain", "reseptors.com", first_seen=NOW - timedelta(days=100))).verdict == DROP
    assert (
        vetter.vet(ioc("url", "http://reseptors.com/a", first_seen=NOW - timedelta(days=170))).verdict == KEEP
    )
    assert vetter.vet(ioc("sha256_hash", REAL_SHA256, first_seen=NOW - timedelta(days=2000))).verdict == KEEP
    # too old is reason enough: the lists are not consulted (a full dump is mostly years old)
    assert vetter.vet(ioc("ip:port", "8.8.8.8:53", first_seen=old)).reasons == ("max-age",)
    naive = vetter.vet(ioc("ip:port", "185.215.113.26:505", first_seen=old.replace(tzinfo=None)))
    assert naive.reasons == ("max-age",)  # a naive time counts as UTC
    result = vetter.vet_all([ioc("domain", "reseptors.com", first_seen=NOW - timedelta(days=100))])
    assert (result.kept, [v.reasons for v in result.dropped]) == ([], [("max-age",)])


def test_max_age_specs() -> None:
    ages = MaxAge.defaults().with_specs(["ip:port=14d", "hash=2w", "url=none"])
    assert ages.age(IocType.IP_PORT) == timedelta(days=14)
    assert ages.age(IocType.SHA1) == timedelta(weeks=2)
    assert ages.age(IocType.URL) is None
    assert ages.age(IocType.DOMAIN) == timedelta(days=90)  # the default, untouched
    everything = MaxAge.defaults().with_specs(["36h"])
    assert {everything.age(t) for t in IocType} == {timedelta(hours=36)}
    assert {MaxAge.disabled().age(t) for t in IocType} == {None}
    assert parse_age("none") is None
    for bad in (["ip=30x"], ["url=0d"], ["hostname=30d"]):
        with pytest.raises(MaxAgeError):
            MaxAge.defaults().with_specs(bad)
    vetter = Vetter(max_age=["ip:port=14d"], now=NOW)
    assert (
        vetter.vet(ioc("ip:port", "185.215.113.26:505", first_seen=NOW - timedelta(days=20))).verdict == DROP
    )


def test_min_confidence(vetter: Vetter) -> None:
    strict = Vetter(min_confidence=75, now=NOW)
    assert strict.vet(ioc("domain", "reseptors.com", confidence=75)).verdict == KEEP
    low = strict.vet(ioc("domain", "reseptors.com", confidence=50))
    assert (low.verdict, low.reasons) == (DROP, ("min-confidence",))
    assert strict.vet(ioc("domain", "reseptors.com", confidence=None)).verdict == DROP  # counts as 0
    assert vetter.vet(ioc("domain", "reseptors.com", confidence=None)).verdict == KEEP


# ---- performance -----------------------------------------------------------------------------------


def synthetic_iocs(count: int, seed: int = 1) -> list[Ioc]:
    """A ThreatFox-like mix: 35 % ip:port, 20 % domain, 30 % url, 15 % hashes, a few listed values."""
    rng = random.Random(seed)
    words = ["gate", "panel", "cdn", "update", "api", "files", "img", "secure", "login", "bins"]
    tlds = ["com", "net", "xyz", "top", "ru", "info", "online", "site"]
    seen = NOW - timedelta(days=2)
    result = []
    for n in range(count):
        pick = rng.random()
        name = f"{rng.choice(words)}{rng.randrange(10**6)}.{rng.choice(tlds)}"
        if rng.random() < 0.05:
            name = rng.choice(
                ["x.duckdns.org", "docs.google.com", "8.8.8.8", "raw.githubusercontent.com", "bit.ly"]
            )
        if pick < 0.35:
            address = (
                f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
            )
            item = (IocType.IP_PORT, f"{address}:{rng.choice((80, 443, 8080, 4444))}")
        elif pick < 0.55:
            item = (IocType.DOMAIN, name if "." in name and not name[0].isdigit() else f"c2{n}.example.net")
        elif pick < 0.85:
            item = (IocType.URL, f"http://{name}/{rng.choice(words)}/{n}.php")
        else:
            item = (IocType.SHA256, f"{rng.getrandbits(256):064x}")
        result.append(Ioc(item[0], item[1], "win.test", "Test", "botnet_cc", confidence=75, first_seen=seen))
    return result


def test_vetting_100k_iocs_is_fast(vetter: Vetter) -> None:
    iocs = synthetic_iocs(100_000)
    started = time.perf_counter()
    result = vetter.vet_all(iocs)
    elapsed = time.perf_counter() - started
    assert len(result.kept) + len(result.dropped) == len(iocs)
    assert result.flagged and result.dropped
    assert elapsed < 5.0, f"vetting 100k IOCs took {elapsed:.2f} s"


# ---- the command -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("vet")(vet_command)
    app.command("other")(lambda: None)  # more than one command: `vet` stays a subcommand
    return app


@pytest.fixture(scope="module")
def cli_feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [("ip:port", "8.8.8.8:53"), ("domain", "x.duckdns.org"), ("domain", "reseptors.com"),
            ("url", "https://bit.ly/3xYzAbC"), ("md5_hash", EMPTY_MD5)]  # fmt: skip
    return write_feed(tmp_path_factory.mktemp("cli") / "feed.json", rows)


def test_vet_command_json_to_a_file(cli: typer.Typer, cli_feed: Path, tmp_path: Path) -> None:
    out = tmp_path / "verdicts.json"
    result = CliRunner().invoke(
        cli, ["vet", str(cli_feed), "--format", "json", "-o", str(out), "--max-age", "none"]
    )
    assert result.exit_code == 0, result.output
    verdicts = {v["ioc"]: v for v in json.loads(out.read_text(encoding="utf-8"))}
    assert set(next(iter(verdicts.values()))) == {"ioc", "ioc_type", "family", "verdict", "reasons"}
    assert verdicts["8.8.8.8:53"]["verdict"] == DROP and "public-dns-v4" in verdicts["8.8.8.8:53"]["reasons"]
    assert verdicts["x.duckdns.org"]["verdict"] == FLAG
    assert verdicts["reseptors.com"] == {
        "ioc": "reseptors.com", "ioc_type": "domain", "family": "Test", "verdict": KEEP, "reasons": [],
    }  # fmt: skip
    assert verdicts[EMPTY_MD5]["verdict"] == DROP
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, nothing left over


def test_vet_command_table(cli: typer.Typer, cli_feed: Path) -> None:
    result = CliRunner().invoke(cli, ["vet", str(cli_feed), "--max-age", "none"])
    assert result.exit_code == 0, result.output
    assert "foxhunt vet: 5 IOCs" in result.output
    assert "public-dns-v4" in result.output and "url-shortener" in result.output
    assert "8[.]8[.]8[.]8:53" in result.output  # defanged
    assert "reseptors" not in result.output  # kept IOCs are only counted


def test_vet_command_applies_max_age_and_min_confidence(cli: typer.Typer, tmp_path: Path) -> None:
    feed = write_feed(
        tmp_path / "old.json", [("ip:port", "185.215.113.26:505"), ("sha256_hash", REAL_SHA256)]
    )
    feed.write_text(feed.read_text(encoding="utf-8").replace("2026-11-19", "2022-02-19"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["vet", str(feed), "--format", "json", "--min-confidence", "95"])
    assert result.exit_code == 0, result.output
    verdicts = {v["ioc"]: v for v in json.loads(result.output)}
    assert verdicts["185.215.113.26:505"]["reasons"] == ["min-confidence", "max-age"]  # 90 < 95, seen in 2022
    assert verdicts[REAL_SHA256]["reasons"] == ["min-confidence"]  # hashes do not expire
    result = CliRunner().invoke(cli, ["vet", str(feed), "--format", "json", "--max-age", "none"])
    assert {v["verdict"] for v in json.loads(result.output)} == {KEEP}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--allowlist", "{bad}"], "{bad}:2: cidrs: not an address or CIDR range"),
        (["--policy", "{bad}"], "{bad}:1: policy: unknown key 'cidrs'"),
        (["--feed-format", "json", "{missing}"], "missing.json"),
    ],
)
def test_vet_command_input_errors_exit_2(
    cli: typer.Typer, cli_feed: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cidrs:\n  - 10.0.0.0/33\n", encoding="utf-8")
    missing = tmp_path / "missing.json"
    fill = {"bad": str(bad), "missing": str(missing)}
    argv = ["vet", *(a.format(**fill) for a in args)]
    if "{missing}" not in args:
        argv.append(str(cli_feed))
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert message.format(**fill) in result.output


def test_vet_command_bad_options_exit_2(cli: typer.Typer, cli_feed: Path) -> None:
    for args in (["--max-age", "ip=soon"], ["--format", "yaml"], ["--min-confidence", "101"]):
        result = CliRunner().invoke(cli, ["vet", str(cli_feed), *args])
        assert result.exit_code == 2, (args, result.output)


# ---- exclusions: the KQL subset and its SQL -------------------------------------------------------

EXCLUSION_ROWS = [  # a Kusto string is never null but empty; the log view below shows some empties as NULL
    # RemoteUrl, RemotePort, RemoteIP, InitiatingProcessFileName, InitiatingProcessFolderPath
    ("x.windowsupdate.com", 443, "10.1.2.3", "msiexec.exe", r"C:\Windows\System32"),
    ("", None, "", "", ""),
    ("EVIL.com/a", 80, "8.8.8.8", "MsiExec.EXE", r"C:\Users\Public"),
    ("", None, "", "", ""),
    ("a-windowsupdate.com.x", 8080, "300.1.1.1", "svc.exe", r"c:\windows\temp"),
    (
        "https://cdn.vendor.example/updates/x.msi",
        8443,
        "192.168.1.10",
        "agent.exe",
        r"C:\Program Files\Agent",
    ),
]

EXCLUSION_CASES = [
    'RemoteUrl has "windowsupdate"',
    'RemoteUrl has_cs "EVIL"',
    'RemoteUrl !has "evil"',
    'RemoteUrl contains "evil"',
    'RemoteUrl !contains_cs "EVIL"',
    'RemoteUrl startswith "x."',
    'RemoteUrl endswith ".com"',
    'RemoteUrl endswith_cs ".com"',
    'RemoteUrl !startswith "https://cdn.vendor.example/"',
    'RemoteUrl =~ "EVIL.COM/A"',
    'RemoteUrl !~ "evil.com/a"',
    'RemoteUrl == ""',
    'RemoteUrl matches regex @"^x\\."',
    'RemoteUrl has_any ("evil", "windowsupdate")',
    'InitiatingProcessFileName in~ ("msiexec.exe")',
    'InitiatingProcessFileName in ("msiexec.exe", "svc.exe")',
    'InitiatingProcessFileName !in ("svc.exe")',
    'InitiatingProcessFileName !in~ ("MSIEXEC.EXE")',
    'tolower(InitiatingProcessFileName) == "msiexec.exe"',
    'InitiatingProcessFolderPath startswith @"C:\\Windows\\"',
    "RemotePort == 443",
    "RemotePort != 443",
    "RemotePort >= 8080",
    "RemotePort between (80 .. 443)",
    "RemotePort !between (80 .. 443)",
    "RemotePort in (80, 8443)",
    "isempty(RemoteUrl)",
    "isnotempty(RemoteUrl)",
    "isnull(RemotePort)",
    "isnotnull(RemotePort)",
    "not(RemotePort == 80)",
    '(InitiatingProcessFileName in~ ("msiexec.exe") and RemoteUrl endswith ".windowsupdate.com") or RemotePort == 8443',
    'not(RemoteUrl has "evil" or isempty(RemoteUrl)) and RemotePort < 1000',
]


@pytest.fixture(scope="module")
def exclusion_db():
    """The rows twice: typed, for duckdb-kql (the KQL oracle), and as text, as `foxhunt hunt` sees a log."""
    duckdb_kql = pytest.importorskip("duckdb_kql")
    con = duckdb_kql.connect()
    con.execute(
        'CREATE TABLE DeviceNetworkEvents ("RemoteUrl" VARCHAR, "RemotePort" INTEGER, "RemoteIP" VARCHAR, '
        '"InitiatingProcessFileName" VARCHAR, "InitiatingProcessFolderPath" VARCHAR, "_row" INTEGER)'
    )
    con.executemany(
        "INSERT INTO DeviceNetworkEvents VALUES (?, ?, ?, ?, ?, ?)",
        [(*r, n) for n, r in enumerate(EXCLUSION_ROWS)],
    )
    con.execute(
        "CREATE VIEW log AS SELECT _row, CASE WHEN _row = 3 THEN NULL ELSE RemoteUrl END AS RemoteUrl, "
        "CAST(RemotePort AS VARCHAR) AS RemotePort, NULLIF(RemoteIP, '') AS RemoteIP, InitiatingProcessFileName, "
        "NULLIF(InitiatingProcessFolderPath, '') AS InitiatingProcessFolderPath FROM DeviceNetworkEvents"
    )
    return duckdb_kql, con


@pytest.mark.parametrize("expression", EXCLUSION_CASES)
def test_exclusion_sql_matches_what_kql_matches(exclusion_db, expression: str) -> None:
    duckdb_kql, con = exclusion_db
    allowlist = parse_allowlist(f"exclusions:\n  DeviceNetworkEvents:\n    - {json.dumps(expression)}\n")
    by_kql = {
        r[0]
        for r in duckdb_kql.kql(con, f"DeviceNetworkEvents | where {expression} | project _row").fetchall()
    }
    sql = allowlist.sql_exclusion("DeviceNetworkEvents")
    by_sql = {r[0] for r in con.execute(f"SELECT _row FROM log WHERE coalesce(({sql}), false)").fetchall()}
    assert by_sql == by_kql, (expression, sql)
    filtered = con.execute(
        f"SELECT _row FROM log WHERE {allowlist.sql_filter('DeviceNetworkEvents')}"
    ).fetchall()
    kept = {r[0] for r in filtered}
    assert kept == set(range(len(EXCLUSION_ROWS))) - by_kql


@pytest.mark.parametrize(
    ("expression", "rows"),
    [
        ('ipv4_is_in_range(RemoteIP, "10.0.0.0/8")', {0}),
        ('ipv4_is_in_any_range(RemoteIP, "10.0.0.0/8", "8.8.8.0/24")', {0, 2}),
        ("ipv4_is_private(RemoteIP)", {0, 5}),
        ("isnotempty(RemoteIP) and not(ipv4_is_private(RemoteIP))", {2}),  # 300.1.1.1 is not an address: null
    ],
)
def test_exclusion_ipv4_functions_in_sql(exclusion_db, expression: str, rows: set[int]) -> None:
    _, con = exclusion_db
    allowlist = parse_allowlist(f"exclusions:\n  DeviceNetworkEvents:\n    - {json.dumps(expression)}\n")
    sql = allowlist.sql_exclusion("DeviceNetworkEvents")
    assert {
        r[0] for r in con.execute(f"SELECT _row FROM log WHERE coalesce(({sql}), false)").fetchall()
    } == rows
    assert allowlist.exclusion_columns("DeviceNetworkEvents") == ("RemoteIP",)


def test_every_supported_exclusion_is_valid_kql(kql_oracle) -> None:
    expressions = [*EXCLUSION_CASES, 'ipv4_is_in_any_range(RemoteIP, "10.0.0.0/8", "8.8.8.0/24")',
                   "ipv4_is_private(RemoteIP)", 'ipv4_is_in_range(RemoteIP, "10.0.0.0/8")']  # fmt: skip
    text = "exclusions:\n  DeviceNetworkEvents:\n" + "".join(f"    - {json.dumps(e)}\n" for e in expressions)
    allowlist = parse_allowlist(text)
    for platform, time_column in (("sentinel", "TimeGenerated"), ("defender", "Timestamp")):
        queries = [
            (
                f"q{n}",
                f"DeviceNetworkEvents | where {time_column} > ago(1d) | where not(coalesce({e.kql}, false))",
            )
            for n, e in enumerate(allowlist.exclusions["DeviceNetworkEvents"])
        ]
        for query_id, diagnostics in kql_oracle.check(queries, platform=platform).items():
            assert not [d for d in diagnostics if d.is_error], (
                platform,
                queries[int(query_id[1:])],
                diagnostics,
            )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("RemotePort == '443'", "RemotePort is number: compare it with a number value, not a string"),
        ("RemoteUrl > 5", "RemoteUrl is string: compare it with a string value, not a number"),
        ('RemoteUrl < "m"', "< compares numbers"),
        ("RemoteUrl == RemoteIP", "expected a string, number or true/false, found 'RemoteIP'"),
        ("RemotePort has '44'", "RemotePort is number: string operators need a string column"),
        ("Timestamp > ago(1d)", "'Timestamp' is not a column of the table"),
        ("RemotePort > 1d", "unexpected '1d'"),
        ("strlen(RemoteUrl) > 3", "expected a column of the table, found 'strlen'"),
        ("RemoteUrl has 'a' | take 1", "'|' is not allowed"),
        ("RemoteUrl", "RemoteUrl is string, not a condition"),
        ("RemoteUrl has 'a' RemotePort == 1", "unexpected 'RemotePort' after a complete expression"),
        ("RemoteUrl matches regex '(unclosed'", "bad regular expression"),
        ("ipv4_is_in_range(RemoteIP, '10.0.0.0/33')", "not an IPv4 address or range"),
        ("RemotePort between (1 .. 'x')", "between takes numbers"),
    ],
)
def test_unsupported_exclusions_are_rejected_with_the_reason(expression: str, message: str) -> None:
    with pytest.raises(AllowlistError) as caught:
        parse_allowlist(
            f"# ours\nexclusions:\n  DeviceNetworkEvents:\n    - {json.dumps(expression)}\n", "a.yaml"
        )
    assert str(caught.value).startswith("a.yaml:4: exclusions DeviceNetworkEvents: ")
    assert message in str(caught.value)
