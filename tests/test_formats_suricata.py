"""Suricata output: the real dump's rules parse (suricataparser), load in Suricata itself (`suricata -T`),
pass suricata-check without warnings, and, run by Suricata over a pcap of planted packets, alert on
exactly the planted hits (domain = name or subdomain via dotprefix/endswith, ip:port = the pair)."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
import suricata_check
from suricata_check.utils.rule import parse as check_parse
from suricataparser import parse_file

from formats_helpers import kept_iocs, manifest_files, real_pack
from foxhunt.build import build
from foxhunt.render.suricata import SID_BASE, SID_SPAN, allocate_sids

CONFIG = Path("/etc/suricata/suricata.yaml")  # the configuration Debian's suricata package installs


def _suricata() -> str:
    tool = shutil.which("suricata")
    if tool is None or not CONFIG.is_file():
        pytest.fail(
            "suricata is missing: apt-get install suricata (Debian 12: from bookworm-backports; .ci/run adds it)",
            pytrace=False,
        )
    return tool


def _rules_file() -> Path:
    pack, _ = real_pack()
    (entry,) = manifest_files(pack, "suricata")
    return pack / entry["path"]


def test_real_dump_rules_parse_with_unique_sids_in_the_documented_range() -> None:
    pack, _ = real_pack()
    rules = parse_file(str(_rules_file()))
    kept = kept_iocs(pack)
    http_urls = [v for t, v in kept if t == "url" and v.startswith("http://")]
    expected = (
        sum(1 for t, _ in kept if t == "ip:port")
        + 3 * sum(1 for t, _ in kept if t == "domain")
        + sum(1 if "?" in u else 2 for u in http_urls)
    )
    assert len(rules) == expected
    sids = [int(rule.sid) for rule in rules]
    assert len(set(sids)) == len(sids) and all(SID_BASE <= sid < SID_BASE + SID_SPAN for sid in sids)
    for rule in rules:
        names = [option.name for option in rule.options]
        assert rule.msg.startswith("FOXHUNT MALWARE ") and {
            "reference",
            "classtype",
            "rev",
            "metadata",
        } <= set(names)
    domain_rules = [r for r in rules if r.header.startswith(("dns", "tls"))]
    assert domain_rules and all(
        [o.name for o in r.options][1:5] in (["dns.query", "dotprefix", "content", "endswith"],
                                             ["flow", "tls.sni", "dotprefix", "content"]) for r in domain_rules
    )  # fmt: skip
    endpoint = next(r for r in rules if "101.35.198.64:80 " in r.msg + " ")
    assert endpoint.header == "ip $HOME_NET any -> [101.35.198.64] 80"


def test_real_dump_rules_load_in_suricata() -> None:
    tool = _suricata()
    rules = _rules_file()
    result = subprocess.run(
        [tool, "-T", "-c", str(CONFIG), "-S", str(rules), "-l", str(rules.parent), "-v"],
        capture_output=True,
        text=True,
    )
    count = len(parse_file(str(rules)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{count} rules successfully loaded, 0 rules failed" in result.stdout + result.stderr
    broken = rules.parent / "broken.rules"  # the same check refuses a broken rule: it is not a formality
    broken.write_text(
        'alert dns any any -> any any (msg:"x"; dns.query; content:"a"; endswith; nosuchkeyword; sid:1;)\n'
    )
    result = subprocess.run(
        [tool, "-T", "-c", str(CONFIG), "-S", str(broken), "-l", str(rules.parent)], capture_output=True
    )
    assert result.returncode != 0


def test_real_dump_rules_pass_suricata_check_without_warnings() -> None:
    checkers = suricata_check.get_checkers(issue_severity=logging.INFO)
    assert len(checkers) > 5
    problems = []
    for line in _rules_file().read_text().splitlines():
        if line and not line.startswith("#"):
            report = suricata_check.analyze_rule(check_parse(line), checkers=checkers)
            problems += [
                (issue.code, issue.message) for issue in report.issues if issue.severity >= logging.WARNING
            ]
    assert problems == []


def test_sid_allocation_is_deterministic_and_resolves_collisions() -> None:
    keys = [f"domain|host{n}.example|dns" for n in range(2000)]
    sids = allocate_sids(keys)
    assert allocate_sids(list(reversed(keys))) == sids  # input order does not matter
    assert len(set(sids.values())) == len(keys)
    more = allocate_sids([*keys, "domain|new.example|dns"])
    moved = [k for k in keys if more[k] != sids[k]]
    assert len(moved) <= 1  # a new key moves at most a colliding neighbour


# ---- Suricata over a pcap of planted packets ------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))  # fmt: skip
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\x08\x00" + header + payload


def _dns_query(src_port: int, name: str) -> bytes:
    question = (
        b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0\x00\x01\x00\x01"
    )
    dns = struct.pack("!HHHHHH", src_port, 0x0100, 1, 0, 0, 0) + question
    udp = struct.pack("!HHHH", src_port, 53, 8 + len(dns), 0) + dns
    return _ipv4("10.0.0.5", "192.0.2.53", 17, udp)


def _tcp_syn(src_port: int, dst: str, dst_port: int) -> bytes:
    return _ipv4(
        "10.0.0.5", dst, 6, struct.pack("!HHIIBBHHH", src_port, dst_port, 1, 0, 0x50, 0x02, 65535, 0, 0)
    )


def _pcap(path: Path, packets: list[bytes]) -> None:
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for n, packet in enumerate(packets):
        data += struct.pack("<IIII", 1_764_000_000 + n, 0, len(packet), len(packet)) + packet
    path.write_bytes(data)


# (source port identifying the packet, packet, should alert)
PLANTED = [
    (40001, _dns_query(40001, "evil-c2.example"), True),
    (40002, _dns_query(40002, "a.b.evil-c2.example"), True),
    (40003, _dns_query(40003, "EVIL-C2.Example"), True),
    (40004, _dns_query(40004, "notevil-c2.example"), False),
    (40005, _dns_query(40005, "evil-c2.example.net"), False),
    (40006, _tcp_syn(40006, "203.0.113.5", 443), True),
    (40007, _tcp_syn(40007, "203.0.113.5", 80), False),
    (40008, _tcp_syn(40008, "203.0.113.6", 443), False),
]


def test_suricata_alerts_on_exactly_the_planted_hits(tmp_path: Path) -> None:
    tool = _suricata()
    feed = tmp_path / "feed.json"
    base = {"threat_type": "botnet_cc", "malware": "win.testrat", "malware_printable": "TestRAT",
            "confidence_level": 90, "first_seen": "2026-11-20 10:00:00 UTC"}  # fmt: skip
    feed.write_text(json.dumps([{**base, "id": "1", "ioc": "evil-c2.example", "ioc_type": "domain"},
                                {**base, "id": "2", "ioc": "203.0.113.5:443", "ioc_type": "ip:port"}]))  # fmt: skip
    out = tmp_path / "pack"
    build([feed], out, formats=("suricata",))
    _pcap(tmp_path / "planted.pcap", [packet for _, packet, _ in PLANTED])
    logs = tmp_path / "logs"
    logs.mkdir()
    result = subprocess.run(
        [tool, "-c", str(CONFIG), "-S", str(out / "suricata" / "foxhunt.rules"), "-r", str(tmp_path / "planted.pcap"),
         "-l", str(logs), "-k", "none", "--runmode", "single"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    events = [json.loads(line) for line in (logs / "eve.json").read_text().splitlines()]
    alerted = {event["src_port"] for event in events if event["event_type"] == "alert"}
    assert sorted(alerted) == sorted(port for port, _, hit in PLANTED if hit)


# ---- hostile and oversized feed records ----------------------------------------------------------

INJECTED_ID = '7/; classtype:trojan-activity; sid:1000001; rev:1;)\nalert ip any any -> any any (msg:"INJECTED"; reference:url,x'
INJECTED_TEXT = 'x"; sid:1000002; rev:1;)\nalert ip any any -> any any (msg:"INJECTED"; reference:url,\\x'


def _suricata_test(rules: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_suricata(), "-T", "-c", str(CONFIG), "-S", str(rules), "-l", str(rules.parent), "-v"],
        capture_output=True,
        text=True,
    )


def test_hostile_feed_text_cannot_inject_options_or_rules(tmp_path: Path) -> None:
    base = {"threat_type": INJECTED_TEXT, "malware": INJECTED_TEXT, "malware_printable": INJECTED_TEXT,
            "tags": [INJECTED_TEXT], "confidence_level": 90, "first_seen": "2026-11-20 10:00:00 UTC"}  # fmt: skip
    records = [{**base, "id": INJECTED_ID, "ioc": "evil-c2.example", "ioc_type": "domain"},
               {**base, "id": None, "ioc": "203.0.113.5:443", "ioc_type": "ip:port"},
               {**base, "id": "12", "ioc": "http://bad.example/gate.php", "ioc_type": "url"}]  # fmt: skip
    feed = tmp_path / "feed.json"
    feed.write_text(json.dumps(records))
    build([feed], tmp_path / "pack", formats=("suricata",))
    rules_file = tmp_path / "pack" / "suricata" / "foxhunt.rules"
    lines = [line for line in rules_file.read_text().splitlines() if line and not line.startswith("#")]
    assert len(lines) == 3 + 1 + 2 and all(
        line.startswith("alert ") for line in lines
    )  # domain, ip:port, url
    # hostile text survives only as inert words inside msg: each line parses as one rule with the usual
    # options, one sid (in the range) and one reference to a ThreatFox page
    expected = ["msg", "reference", "classtype", "sid", "rev", "metadata"]
    for rule in parse_file(str(rules_file)):
        names = [option.name for option in rule.options]
        assert [name for name in names if name in expected] == expected, rule.raw
        assert SID_BASE <= int(rule.sid) < SID_BASE + SID_SPAN and not {'"', ";", "\\", "\n"} & set(rule.msg)
        (reference,) = [option.value for option in rule.options if option.name == "reference"]
        assert reference.startswith("url,threatfox.abuse.ch/browse/malware/x%22%3B") or reference == (
            "url,threatfox.abuse.ch/ioc/12/"
        )
    assert len(parse_file(str(rules_file))) == 6
    result = _suricata_test(rules_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 rules successfully loaded, 0 rules failed" in result.stdout + result.stderr


def test_long_urls_shorten_msg_and_rules_suricata_refuses_are_skipped_with_a_warning(tmp_path: Path) -> None:
    long_url = "http://long.example/" + "a" * 3_880  # 3,900 characters: its rule fits once msg is shortened
    huge_url = "http://huge.example/" + "b" * 7_980  # 8,000 characters: no rule would fit
    base = {"threat_type": "botnet_cc", "malware": "win.testrat", "malware_printable": "TestRAT",
            "confidence_level": 90, "first_seen": "2026-11-20 10:00:00 UTC"}  # fmt: skip
    feed = tmp_path / "feed.json"
    feed.write_text(json.dumps([{**base, "id": "1", "ioc": long_url, "ioc_type": "url"},
                                {**base, "id": "2", "ioc": huge_url, "ioc_type": "url"},
                                {**base, "id": "3", "ioc": "evil-c2.example", "ioc_type": "domain"}]))  # fmt: skip
    build([feed], tmp_path / "pack", formats=("suricata",))
    rules_file = tmp_path / "pack" / "suricata" / "foxhunt.rules"
    rules = parse_file(str(rules_file))
    assert len(rules) == 2 + 3 and all(len(rule.raw) < 8_192 for rule in rules)
    long_rules = [rule for rule in rules if "long .example" in rule.msg]
    assert len(long_rules) == 2 and all(len(rule.msg) < 300 and "..." in rule.msg for rule in long_rules)
    assert not any("huge" in rule.raw for rule in rules)
    manifest = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    (warning,) = manifest["warnings"]
    assert "http://huge.example/" in warning and "8,000 characters" in warning
    assert manifest["files"][0]["count"] == 5
    result = _suricata_test(rules_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 rules successfully loaded, 0 rules failed" in result.stdout + result.stderr
