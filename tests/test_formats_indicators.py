"""Indicator lists: Defender for Endpoint import CSVs, Sentinel watchlists, the hosts file and the DNS RPZ
zone (checked by BIND's named-checkzone), on the real dump and on small feeds made for each rule."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from formats_helpers import kept_iocs, manifest_files, real_pack
from foxhunt.build import build
from foxhunt.cli.app import app
from foxhunt.render import defender
from foxhunt.rules.planner import WATCHLIST_COLUMNS

runner = CliRunner()
DEFENDER_HEADER = (
    "IndicatorType,IndicatorValue,ExpirationTime,Action,Severity,Title,Description,RecommendedActions,"
    "RbacGroups,Category,MitreTechniques,GenerateAlert"
)
DEFENDER_TYPES = {"FileSha1", "FileSha256", "FileMd5", "IpAddress", "DomainName", "Url"}


def _feed(tmp_path: Path, records: list[dict], name: str = "feed.json") -> Path:
    base = {"threat_type": "botnet_cc", "malware": "win.testrat", "malware_printable": "TestRAT",
            "confidence_level": 90, "first_seen": "2026-11-20 10:00:00 UTC"}  # fmt: skip
    path = tmp_path / name
    path.write_text(json.dumps([{**base, **r} for r in records]), encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == DEFENDER_HEADER
    return list(csv.DictReader(io.StringIO(text)))


def test_real_dump_defender_csv_has_the_exact_header_types_and_one_row_per_indicator() -> None:
    pack, _ = real_pack()
    (entry,) = manifest_files(pack, "defender-csv")
    rows = _rows(pack / entry["path"])
    assert entry["count"] == len(rows) <= defender.MAX_ROWS
    assert {r["IndicatorType"] for r in rows} <= DEFENDER_TYPES
    kept = kept_iocs(pack)
    expected = {("FileSha256", v) for t, v in kept if t == "sha256_hash"}
    expected |= {("IpAddress", v.rsplit(":", 1)[0].strip("[]")) for t, v in kept if t == "ip:port"}
    expected |= {("DomainName", v) for t, v in kept if t == "domain"} | {
        ("Url", v) for t, v in kept if t == "url"
    }
    assert {(r["IndicatorType"], r["IndicatorValue"]) for r in rows} == expected
    assert len(rows) == len(expected)  # one row per IP, however many ports
    for row in rows:
        assert row["Action"] == "Audit" and row["GenerateAlert"] == "TRUE"
        assert row["Severity"] in ("Informational", "Low", "Medium", "High")
        assert row["Category"] in ("CommandAndControl", "Execution") and row["MitreTechniques"].startswith(
            "T"
        )
        assert row["Title"] and row["Description"]
        if row["IndicatorType"] == "IpAddress":
            assert "cannot match a port" in row["Description"]
            assert row["ExpirationTime"].endswith("Z")  # ip:port expire after 30 days
        if row["IndicatorType"].startswith("File"):
            assert row["ExpirationTime"] == ""  # hashes never expire


def test_defender_ip_rows_merge_ports_take_the_ip_only_severity_and_files_split_at_500(
    tmp_path: Path,
) -> None:
    records = [{"id": "1", "ioc": "198.51.100.7:443", "ioc_type": "ip:port", "last_seen": "2026-11-25 10:00:00 UTC"},
               {"id": "2", "ioc": "198.51.100.7:8080", "ioc_type": "ip:port", "confidence_level": 50}]  # fmt: skip
    records += [{"id": str(10 + n), "ioc": f"h{n}.bad.example", "ioc_type": "domain"} for n in range(600)]
    out = tmp_path / "pack"
    build([_feed(tmp_path, records)], out, formats=("defender-csv",))
    entries = manifest_files(out, "defender-csv")
    assert [e["count"] for e in entries] == [500, 101]
    rows = [row for e in entries for row in _rows(out / e["path"])]
    (ip,) = [r for r in rows if r["IndicatorType"] == "IpAddress"]
    assert ip["IndicatorValue"] == "198.51.100.7" and "ports 443, 8080" in ip["Description"]
    assert ip["Severity"] == "Medium"  # High for 90% confidence, one step lower: an IP-only match
    assert {r["Severity"] for r in rows if r["IndicatorType"] == "DomainName"} == {"High"}


def test_defender_warns_past_the_tenant_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defender, "TENANT_LIMIT", 3)
    records = [{"id": str(n), "ioc": f"h{n}.bad.example", "ioc_type": "domain"} for n in range(4)]
    result = runner.invoke(
        app,
        [
            "build",
            "--no-vet",
            str(_feed(tmp_path, records)),
            "-o",
            str(tmp_path / "o"),
            "--format",
            "defender-csv",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "warning: defender-csv: 4 indicators exceed" in result.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["warnings"] and "15,000" not in manifest["warnings"][0]  # the limit in force is named


def test_watchlists_match_the_core_watchlist_files(tmp_path: Path) -> None:
    pack, _ = real_pack()
    entries = manifest_files(pack, "watchlist-csv")
    manifest = json.loads((pack / "manifest.json").read_text())
    assert {e["family"] for e in entries} == {f["slug"] for f in manifest["families"]}
    for entry in entries:
        rows = list(csv.reader((pack / entry["path"]).open(encoding="utf-8")))
        assert tuple(rows[0]) == WATCHLIST_COLUMNS and len(rows) - 1 == entry["count"]
        assert Path(entry["path"]).stem == "foxhunt_" + entry["family"].replace("-", "_")
    # a family too large for inline lists: the Sentinel pack's own watchlist is byte-identical to this format's
    records = [
        {"id": str(n), "ioc": f"http://h{n}.bad.example/{'x' * 400}", "ioc_type": "url"} for n in range(300)
    ]
    out = tmp_path / "big"
    result = build([_feed(tmp_path, records)], out, formats=("sentinel", "watchlist-csv"))
    (family,) = result.manifest["families"]
    assert family["watchlists"] == [e["path"] for e in manifest_files(out, "watchlist-csv")]
    sentinel_only = tmp_path / "sentinel"
    build([_feed(tmp_path, records)], sentinel_only)
    for path in family["watchlists"]:
        assert (out / path).read_bytes() == (sentinel_only / path).read_bytes()


def _checkzone() -> str:
    tool = shutil.which("named-checkzone")
    if tool is None:
        pytest.fail(
            "named-checkzone is missing: apt-get install bind9-utils (.ci/run installs it)", pytrace=False
        )
    return tool


def test_real_dump_rpz_zone_passes_named_checkzone_and_hosts_file_lists_the_domains() -> None:
    pack, _ = real_pack()
    (rpz,) = manifest_files(pack, "rpz")
    check = subprocess.run(
        [_checkzone(), "rpz.foxhunt", str(pack / rpz["path"])], capture_output=True, text=True
    )
    assert check.returncode == 0 and "OK" in check.stdout, check.stdout + check.stderr
    domains = {v for t, v in kept_iocs(pack) if t == "domain"}
    text = (pack / rpz["path"]).read_text()
    for domain in domains:
        assert f"\n{domain} CNAME .\n*.{domain} CNAME .\n" in text
    (hosts,) = manifest_files(pack, "hostfile")
    lines = [
        line for line in (pack / hosts["path"]).read_text().splitlines() if line and not line.startswith("#")
    ]
    assert sorted(lines) == sorted(f"0.0.0.0 {d}" for d in domains) and hosts["count"] == len(domains) == 2


def test_rpz_zone_answers_nxdomain_for_the_name_and_its_subdomains_only(tmp_path: Path) -> None:
    """named-checkzone -D prints the zone as BIND loaded it: each domain and its wildcard, nothing else."""
    records = [{"id": "1", "ioc": "bad-c2.example", "ioc_type": "domain"},
               {"id": "2", "ioc": "xn--bcher-kva.example", "ioc_type": "domain", "last_seen": "2026-11-30 00:00:00 UTC"},
               {"id": "3", "ioc": "198.51.100.7:443", "ioc_type": "ip:port"},
               {"id": "4", "ioc": "http://url-host.example/x", "ioc_type": "url"}]  # fmt: skip
    out = tmp_path / "pack"
    build([_feed(tmp_path, records)], out, formats=("rpz", "hostfile"))
    dump = subprocess.run(
        [_checkzone(), "-D", "-o", "-", "rpz.foxhunt", str(out / "dns" / "foxhunt.rpz")],
        capture_output=True,
        text=True,
    )
    assert dump.returncode == 0, dump.stdout + dump.stderr
    records_loaded = sorted(
        (fields[0], fields[3])
        for fields in (line.split() for line in dump.stdout.splitlines())
        if fields[3] == "CNAME"
    )
    names = ("bad-c2.example", "xn--bcher-kva.example")
    assert records_loaded == sorted(
        (f"{prefix}{name}.rpz.foxhunt.", "CNAME") for name in names for prefix in ("*.", "")
    )
    soa = next(fields for fields in (line.split() for line in dump.stdout.splitlines()) if fields[3] == "SOA")
    assert int(soa[6]) == int(datetime(2026, 11, 30, tzinfo=UTC).timestamp())  # serial: the newest IOC time


def test_rpz_leaves_out_names_too_long_under_the_documented_zone_name(tmp_path: Path) -> None:
    """*.<domain>.rpz.foxhunt. has 16 octets more than <domain> in wire format: 239 characters fit in 255."""
    labels = ".".join(["a" * 63, "b" * 63, "c" * 63])
    fits = f"{labels}.{'d' * 39}.example"  # 239 characters
    too_long = f"{labels}.{'e' * 40}.example"  # 240 characters: a valid domain, but not under the zone name
    records = [{"id": "1", "ioc": fits, "ioc_type": "domain"},
               {"id": "2", "ioc": too_long, "ioc_type": "domain"},
               {"id": "3", "ioc": "bad-c2.example", "ioc_type": "domain"}]  # fmt: skip
    assert (len(fits), len(too_long)) == (239, 240)
    out = tmp_path / "pack"
    result = build([_feed(tmp_path, records)], out, formats=("rpz", "hostfile"))
    assert {ioc.value for ioc in result.feed.iocs} == {fits, too_long, "bad-c2.example"}
    dump = subprocess.run(
        [_checkzone(), "-D", "-o", "-", "rpz.foxhunt", str(out / "dns" / "foxhunt.rpz")],
        capture_output=True,
        text=True,
    )
    assert dump.returncode == 0, dump.stdout + dump.stderr
    loaded = {
        fields[0] for fields in (line.split() for line in dump.stdout.splitlines()) if fields[3] == "CNAME"
    }
    assert loaded == {f"{p}{name}.rpz.foxhunt." for name in (fits, "bad-c2.example") for p in ("", "*.")}
    manifest = json.loads((out / "manifest.json").read_text())
    (warning,) = manifest["warnings"]
    assert warning.startswith(f"rpz: {too_long[:60]}") and "240 characters" in warning
    counts = {entry["format"]: entry["count"] for entry in manifest["files"]}
    assert counts == {"rpz": 2, "hostfile": 3}  # the hosts file has no such limit
