"""Vetting wired into `foxhunt build` and `foxhunt hunt`: dropped IOCs leave every query, flagged ones
lose a severity step, allowlist exclusions reach every query of their table and pass the Kusto parser."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from foxhunt.cli.app import app
from test_build import all_kql

runner = CliRunner()
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
C2 = "cpanel.houston-familyoffice.com"


def feed(path: Path) -> Path:
    cases = [
        ("8.8.8.8:53", "ip:port"), ("10.0.0.5:4444", "ip:port"), ("192.0.2.1:80", "ip:port"),
        ("google.com", "domain"), (EMPTY_MD5, "md5_hash"), ("https://bit.ly/3xYz", "url"),
        ("x.duckdns.org", "domain"), (C2, "domain"), ("c2.allowed-parent.example.net", "domain"),
        ("138.124.79.146:443", "ip:port"),
    ]  # fmt: skip
    data = [
        {"id": str(n), "ioc": value, "ioc_type": kind, "threat_type": "botnet_cc", "malware": "js.fakeupdates",
         "malware_printable": "FAKEUPDATES", "confidence_level": 100, "first_seen": "2026-11-28 10:00:00 UTC"}
        for n, (value, kind) in enumerate(cases)
    ]  # fmt: skip
    path.write_text(json.dumps(data))
    return path


def allowlist(path: Path) -> Path:
    path.write_text(
        "domains:\n  - allowed-parent.example.net\n"
        "exclusions:\n"
        "  DeviceNetworkEvents:\n"
        '    - InitiatingProcessFileName in~ ("msiexec.exe") and RemoteUrl endswith "windowsupdate.com"\n'
        "  CommonSecurityLog:\n"
        '    - DestinationHostName in~ ("splunk-hf01.corp.example")\n'
    )
    return path


def test_build_vets_by_default(tmp_path: Path, kql_oracle) -> None:
    out = tmp_path / "packs"
    result = runner.invoke(
        app,
        [
            "build",
            str(feed(tmp_path / "f.json")),
            "-o",
            str(out),
            "--allowlist",
            str(allowlist(tmp_path / "a.yaml")),
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    queries = all_kql(out)
    every_query = "\n".join(kql for qid, kql, _ in queries if "#fp" not in qid)
    dropped_literals = ('"8.8.8.8:53"', '"10.0.0.5:4444"', '"192.0.2.1:80"', '"google.com"', f'"{EMPTY_MD5}"',
                        '"c2.allowed-parent.example.net"')  # fmt: skip
    for dropped in dropped_literals:
        assert dropped not in every_query, dropped
    for kept in ("bit.ly/3xYz", "x.duckdns.org", C2, "138.124.79.146:443"):
        assert kept in every_query, kept
    assert manifest["vetting"]["drop"] == 6 and manifest["vetting"]["flag"] >= 2
    vetting = (out / "vetting.md").read_text()
    assert "google.com" in vetting.replace("[.]", ".") and "allowlist" in vetting
    # allowlist exclusions reach every query of their table, hunting and analytic alike
    for qid, kql, _ in queries:
        if "#fp" in qid:
            continue
        table = next(
            line for line in kql.splitlines() if line and not line.startswith(("//", "let ", " ", "|", "}"))
        )
        assert ('"msiexec.exe"' in kql) == (table == "DeviceNetworkEvents"), qid
        assert ('"splunk-hf01.corp.example"' in kql) == (table == "CommonSecurityLog"), qid
    for platform in ("sentinel", "defender"):
        unique = {kql: qid for qid, kql, p in queries if p == platform}
        results = kql_oracle.check([(qid, kql) for kql, qid in unique.items()], platform=platform)
        assert not {q: d for q, d in results.items() if d}
    # a flagged IOC alone in its rule gets one severity step less than the same confidence unflagged
    rules = {Path(r["path"]).name: r for r in manifest["rules"] if r["format"] == "sentinel-yaml"}
    dns = yaml.safe_load((out / rules["DnsEvents-domain.yaml"]["path"]).read_text())
    assert dns["severity"] == "High"  # the C2 domain is kept unflagged at 100%
    assert (
        "vetting flagged as shared infrastructure" in dns["description"]
    )  # x.duckdns.org is in the same rule


def test_hunt_vets_and_applies_allowlist_exclusions(tmp_path: Path) -> None:
    log = tmp_path / "csl.csv"
    log.write_text(
        "TimeGenerated,DeviceVendor,SourceIP,SourcePort,DestinationIP,DestinationPort,DestinationHostName,RequestURL\n"
        "2026-12-01T10:00:00Z,PAN,10.1.1.1,5000,138.124.79.146,443,c2.example,\n"
        "2026-12-01T10:01:00Z,PAN,10.1.1.1,5001,138.124.79.146,443,splunk-hf01.corp.example,\n"
        "2026-12-01T10:02:00Z,PAN,10.1.1.1,5002,8.8.8.8,53,dns.google,\n"
        f"2026-12-01T10:03:00Z,PAN,10.1.1.1,5003,1.1.1.1,443,www.{C2},\n"
    )
    args = ["hunt", "--feed", str(feed(tmp_path / "f.json")), str(log)]
    vetted = runner.invoke(app, [*args, "--allowlist", str(allowlist(tmp_path / "a.yaml"))])
    assert vetted.exit_code == 0, vetted.output
    hits = {(h["record"], h["ioc"]) for h in map(json.loads, vetted.stdout.splitlines())}
    assert hits == {(1, "138.124.79.146:443"), (4, C2)}  # record 2 excluded, 8.8.8.8 dropped
    raw = runner.invoke(app, [*args, "--no-vet"])
    assert {(h["record"], h["ioc"]) for h in map(json.loads, raw.stdout.splitlines())} >= hits | {
        (2, "138.124.79.146:443"),
        (3, "8.8.8.8:53"),
    }


def test_bad_allowlist_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains:\n  - ok.example\ncidrs:\n  - 10.0.0.0/33\n")
    result = runner.invoke(
        app, ["build", str(feed(tmp_path / "f.json")), "-o", str(tmp_path / "o"), "--allowlist", str(bad)]
    )
    assert result.exit_code == 2 and "bad.yaml:4" in result.output


def test_apply_scenarios_compiles_their_exclusions(tmp_path: Path, kql_oracle) -> None:
    from foxhunt.catalog.scenarios import load_scenarios

    scenario = next(s for s in load_scenarios() if s.id == "scheduled-update-job")
    out = tmp_path / "packs"
    result = runner.invoke(
        app, ["build", str(feed(tmp_path / "f.json")), "-o", str(out), "--apply-scenarios", scenario.id,
              "--allowlist", str(allowlist(tmp_path / "a.yaml"))],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "compiles the example values of scheduled-update-job" in result.output  # a warning, not silence
    queries = [(qid, kql) for qid, kql, p in all_kql(out) if "#fp" not in qid and p == "sentinel"]
    with_scenario = [qid for qid, kql in queries if scenario.exclusions["DeviceNetworkEvents"] in kql]
    assert with_scenario and all(
        "DeviceNetworkEvents" in qid or qid.startswith("sentinel-arm") for qid in with_scenario
    )
    assert all('"msiexec.exe"' in kql for qid, kql in queries if qid in with_scenario)  # allowlist kept too
    assert not {q: d for q, d in kql_oracle.check(queries).items() if d}
    bad = runner.invoke(
        app, ["build", str(feed(tmp_path / "f.json")), "-o", str(out), "--apply-scenarios", "nope"]
    )
    assert bad.exit_code == 2 and "scheduled-update-job" in bad.output


def test_hunt_from_a_pack_hunts_what_the_pack_holds_with_its_allowlist(tmp_path: Path) -> None:
    """The pack was vetted when it was built (here: no expiry, an allowlist): hunt --pack neither vets
    it again with the defaults nor forgets the allowlist's table exclusions."""
    old = tmp_path / "old.json"
    records = json.loads(feed(tmp_path / "f.json").read_text())
    old.write_text(json.dumps([dict(r, first_seen="2022-02-20 10:00:00 UTC") for r in records]))
    packs = tmp_path / "packs"
    built = runner.invoke(
        app,
        [
            "build",
            str(old),
            "-o",
            str(packs),
            "--max-age",
            "none",
            "--allowlist",
            str(allowlist(tmp_path / "a.yaml")),
        ],
    )
    assert built.exit_code == 0, built.output
    assert (packs / "allowlist.yaml").read_text() == (tmp_path / "a.yaml").read_text()
    log = tmp_path / "csl.csv"
    log.write_text(
        "TimeGenerated,DeviceVendor,SourceIP,SourcePort,DestinationIP,DestinationPort,DestinationHostName,RequestURL\n"
        "2026-12-01T10:00:00Z,PAN,10.1.1.1,5000,138.124.79.146,443,c2.example,\n"
        "2026-12-01T10:01:00Z,PAN,10.1.1.1,5001,138.124.79.146,443,splunk-hf01.corp.example,\n"
    )
    hunted = runner.invoke(app, ["hunt", "--pack", str(packs), str(log)])
    assert hunted.exit_code == 0, hunted.output
    assert [(h["record"], h["ioc"]) for h in map(json.loads, hunted.stdout.splitlines())] == [
        (1, "138.124.79.146:443")
    ]  # record 2 is excluded by the pack's allowlist; nothing expired
    # the same old feed hunted directly is vetted with the default max age: nothing is left, exit 2
    direct = runner.invoke(app, ["hunt", "--feed", str(old), str(log), "--fail-on-hit"])
    assert direct.exit_code == 2 and "no IOC left to hunt" in direct.output
