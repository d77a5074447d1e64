"""Sigma output: the real dump's rules load and validate in pySigma, convert with the real Splunk and Kusto
backends, cover every kept IOC, and, run as SQL by pySigma's SQLite backend over planted events, match
exactly the foxhunt semantics (domain = name or subdomain, ip:port = the pair, URL with or without query)."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest
import yaml
from sigma.backends.kusto import KustoBackend
from sigma.backends.splunk import SplunkBackend
from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection
from sigma.plugins import InstalledSigmaPlugins
from sigma.validation import SigmaValidator
from typer.testing import CliRunner

from formats_helpers import kept_iocs, manifest_files, real_pack
from foxhunt.build import build
from foxhunt.cli.app import app

runner = CliRunner()

# Validators that load reference data from the internet at run time (MITRE ATT&CK, D3FEND, the SigmaHQ
# taxonomy and filename conventions): the tests have no network. The ATT&CK tags are checked below instead.
NETWORK_DATA_VALIDATORS = {
    "attacktag", "d3_fendtag", "sigmahq_tags_techniques_without_tactics", "sigmahq_unknown_field",
    "sigmahq_invalid_fieldname", "sigmahq_fieldname_cast", "sigmahq_redundant_field", "sigmahq_logsource_unknown",
    "sigmahq_filename_convention", "sigmahq_filename_prefix", "sigmahq_category_event_id",
    "sigmahq_category_windows_provider_name", "sigmahq_correlation_filename_prefix",
}  # fmt: skip
ATTACK_TAGS = {
    "attack.command-and-control",
    "attack.execution",
    "attack.t1071",
    "attack.t1105",
    "attack.t1204",
}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test instead of reaching out."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _rules(pack: Path) -> list[tuple[Path, str]]:
    return [
        (pack / e["path"], (pack / e["path"]).read_text(encoding="utf-8"))
        for e in manifest_files(pack, "sigma")
    ]


def test_every_real_dump_rule_loads_and_passes_the_validators(no_network) -> None:
    pack, _ = real_pack()
    rules = _rules(pack)
    assert len(rules) >= 20
    collection = SigmaCollection.merge(
        [SigmaCollection.from_yaml(text, collect_errors=True) for _, text in rules]
    )
    assert len(collection.rules) == len(rules)
    assert [(r.title, r.errors) for r in collection.rules if r.errors] == []
    plugins = InstalledSigmaPlugins.autodiscover()
    assert set(plugins.validators) >= NETWORK_DATA_VALIDATORS  # the names still exist: the skip list is real
    validators = {cls for name, cls in plugins.validators.items() if name not in NETWORK_DATA_VALIDATORS}
    assert len(validators) > 40  # pySigma core and SigmaHQ convention checks
    issues = SigmaValidator(validators).validate_rules(collection)
    # the intended escapes: a "?" or "*" of a URL IOC (or the "?" after a URL without a query) is literal
    urls = {v for t, v in kept_iocs(pack) if t == "url"}
    literal = urls | {f"{u}?" for u in urls if "?" not in u}

    def is_url_literal(issue) -> bool:
        text = str(issue.string).removesuffix("*").replace("\\?", "?").replace("\\*", "*")
        return type(issue).__name__ == "EscapedWildcardIssue" and text in literal

    intended = [i for i in issues if is_url_literal(i)]
    assert intended  # the real dump has URLs without a query
    assert [f"{type(i).__name__}: {[r.title for r in i.rules]}" for i in issues if i not in intended] == []
    for rule in collection.rules:
        tags = {str(t) for t in rule.tags}
        assert "detection.threat-hunting" in tags
        assert {t for t in tags if t.startswith("attack.")} <= ATTACK_TAGS
        assert rule.level is not None and rule.status is not None and rule.falsepositives
        assert any("threatfox.abuse.ch" in ref for ref in rule.references)


def test_every_real_dump_rule_converts_to_splunk_and_kusto() -> None:
    pack, _ = real_pack()
    for path, text in _rules(pack):
        for backend in (SplunkBackend(), KustoBackend()):  # a fresh parse each: pipelines change the rules
            queries = backend.convert(SigmaCollection.from_yaml(text))
            assert len(queries) == 1 and queries[0], (path, type(backend).__name__)
    # with the Defender XDR pipeline, endpoint rules land on the right tables
    tables = {"network_connection": "DeviceNetworkEvents", "process_creation": "DeviceProcessEvents",
              "file_event": "DeviceFileEvents"}  # fmt: skip
    plugins = InstalledSigmaPlugins.autodiscover()
    for path, text in _rules(pack):
        category = yaml.safe_load(text)["logsource"]["category"]
        if category in tables:
            (query,) = KustoBackend(plugins.pipelines["microsoft_xdr"]()).convert(
                SigmaCollection.from_yaml(text)
            )
            assert query.startswith(tables[category] + "\n"), path


def _rule_values(document: dict) -> set[tuple[str, str]]:
    """(ioc_type, value) the rule's detection names, read back from its YAML."""
    found: set[tuple[str, str]] = set()
    detection = document["detection"]
    if document["logsource"]["category"] == "network_connection":
        for item in detection["selection"]:
            found |= {("ip:port", f"[{ip}]:{item['DestinationPort']}" if ":" in ip else f"{ip}:{item['DestinationPort']}")
                      for ip in item["DestinationIp"]}  # fmt: skip
    for key, values in (pair for sel in detection.values() if isinstance(sel, dict) for pair in sel.items()):
        if key in ("QueryName", "cs-host"):
            found |= {("domain", v) for v in values}
        elif key == "c-uri":
            found |= {
                ("url", v.replace("\\?", "?").replace("\\*", "*").replace("\\\\", "\\")) for v in values
            }
        elif key == "Hashes|contains":
            algo = {"MD5": "md5_hash", "SHA1": "sha1_hash", "SHA256": "sha256_hash"}
            found |= {(algo[v.split("=")[0]], v.split("=")[1]) for v in values}
    return found


def test_rules_cover_every_kept_ioc_and_ids_are_unique() -> None:
    pack, _ = real_pack()
    documents = [yaml.safe_load(text) for _, text in _rules(pack)]
    covered = set().union(*(_rule_values(d) for d in documents))
    assert covered == kept_iocs(pack)
    assert len({d["id"] for d in documents}) == len(documents)
    mirai = [
        d
        for d in documents
        if d["title"].startswith("Mirai") and d["logsource"]["category"] == "process_creation"
    ]
    assert [d["title"][-11:] for d in mirai] == ["Part 1 of 2", "Part 2 of 2"]  # 177 hashes, 100 per rule
    assert sum(len(d["detection"]["selection"]["Hashes|contains"]) for d in mirai) == 177


FEED = [
    {"id": "1", "ioc": "evil-c2.example", "ioc_type": "domain"},
    {"id": "2", "ioc": "203.0.113.5:443", "ioc_type": "ip:port"},
    {"id": "3", "ioc": "[2001:db8::5]:8443", "ioc_type": "ip:port"},
    {"id": "4", "ioc": "http://drop.example/a.exe", "ioc_type": "url"},
    {"id": "5", "ioc": "http://drop.example/p.php?id=1", "ioc_type": "url"},
    {"id": "6", "ioc": "http://drop.example/x*y?z", "ioc_type": "url"},  # Sigma wildcards, literally
    {"id": "7", "ioc": "d41d8cd98f00b204e9800998ecf8427f", "ioc_type": "md5_hash"},
]


def _feed(tmp_path: Path, records: list[dict]) -> Path:
    base = {"threat_type": "botnet_cc", "malware": "win.testrat", "malware_printable": "TestRAT",
            "confidence_level": 90, "first_seen": "2026-11-20 10:00:00 UTC", "tags": ["test"]}  # fmt: skip
    path = tmp_path / "feed.json"
    path.write_text(json.dumps([{**base, **r} for r in records]), encoding="utf-8")
    return path


# (table columns, planted value(s), should match)
EVENTS = [
    ("dns", {"QueryName": "evil-c2.example"}, True),
    ("dns", {"QueryName": "a.b.evil-c2.example"}, True),
    ("dns", {"QueryName": "notevil-c2.example"}, False),
    ("dns", {"QueryName": "evil-c2.example.net"}, False),
    ("dns", {"QueryName": "xevil-c2.example"}, False),
    ("net", {"DestinationIp": "203.0.113.5", "DestinationPort": 443}, True),
    ("net", {"DestinationIp": "203.0.113.5", "DestinationPort": 80}, False),
    ("net", {"DestinationIp": "203.0.113.6", "DestinationPort": 443}, False),
    ("net", {"DestinationIp": "2001:db8::5", "DestinationPort": 8443}, True),
    ("net", {"DestinationIp": "2001:db8::5", "DestinationPort": 443}, False),
    ("proxy", {"c-uri": "http://drop.example/a.exe"}, True),
    ("proxy", {"c-uri": "http://drop.example/a.exe?session=7"}, True),
    ("proxy", {"c-uri": "http://drop.example/a.exe2"}, False),
    ("proxy", {"c-uri": "http://drop.example/a.exe/b"}, False),
    ("proxy", {"c-uri": "http://drop.example/p.php?id=1"}, True),
    ("proxy", {"c-uri": "http://drop.example/p.php?id=12"}, False),
    ("proxy", {"c-uri": "http://drop.example/x*y?z"}, True),
    ("proxy", {"c-uri": "http://drop.example/xAAy?z"}, False),
    ("proxy", {"cs-host": "cdn.evil-c2.example"}, True),
    ("proxy", {"cs-host": "evil-c2.example.attacker.net"}, False),
    ("proc", {"Hashes": "SHA1=AA,MD5=D41D8CD98F00B204E9800998ECF8427F,SHA256=BB"}, True),
    (
        "proc",
        {"Hashes": "MD5=00000000000000000000000000000000,IMPHASH=D41D8CD98F00B204E9800998ECF8427F"},
        False,
    ),
]
COLUMNS = {"dns": ["QueryName"], "net": ["DestinationIp", "DestinationPort"], "proxy": ["c-uri", "cs-host"],
           "proc": ["Hashes"]}  # fmt: skip
CATEGORIES = {"dns_query": "dns", "network_connection": "net", "proxy": "proxy", "process_creation": "proc"}


def test_rules_executed_as_sql_match_exactly_the_foxhunt_semantics(tmp_path: Path) -> None:
    """pySigma's SQLite backend turns each rule into SQL; run over planted hits and near-misses, the rules
    find exactly the hits."""
    out = tmp_path / "pack"
    build([_feed(tmp_path, FEED)], out, formats=("sentinel", "sigma"))
    database = sqlite3.connect(":memory:")
    matched: set[int] = set()
    for entry in manifest_files(out, "sigma"):
        text = (out / entry["path"]).read_text(encoding="utf-8")
        table = CATEGORIES.get(yaml.safe_load(text)["logsource"]["category"])
        if table is None:  # file_event: the same Hashes selection as process_creation
            continue
        (query,) = sqliteBackend().convert(SigmaCollection.from_yaml(text))
        database.execute("DROP TABLE IF EXISTS logs")
        database.execute(f"CREATE TABLE logs (n INTEGER, {', '.join(f'`{c}`' for c in COLUMNS[table])})")
        for n, (kind, values, _) in enumerate(EVENTS):
            if kind == table:
                columns = ", ".join(f"`{c}`" for c in values)
                database.execute(f"INSERT INTO logs (n, {columns}) VALUES (?, {', '.join('?' * len(values))})",
                                 [n, *values.values()])  # fmt: skip
        matched |= {n for (n, *_) in database.execute(query.replace("SELECT *", "SELECT n", 1))}
    expected = {n for n, (_, _, hit) in enumerate(EVENTS) if hit}
    assert sorted(matched) == sorted(expected)


def test_large_families_are_chunked_with_stable_ids(tmp_path: Path) -> None:
    records = [{"id": str(n), "ioc": f"host{n:03d}.bad.example", "ioc_type": "domain"} for n in range(250)]
    first, second = tmp_path / "a", tmp_path / "b"
    build([_feed(tmp_path, records)], first, formats=("sigma",))
    build([_feed(tmp_path, records)], second, formats=("sigma",))
    entries = [e for e in manifest_files(first, "sigma") if "dns_query" in e["path"]]
    assert [e["count"] for e in entries] == [100, 100, 50]
    assert [e["path"].rsplit("/", 1)[1] for e in entries] == [f"dns_query-domain-{n}.yml" for n in (1, 2, 3)]
    for entry in entries:
        assert (first / entry["path"]).read_bytes() == (second / entry["path"]).read_bytes()
        assert yaml.safe_load((first / entry["path"]).read_text())["title"].endswith(" of 3")


def test_convert_command_exit_codes_and_output(tmp_path: Path) -> None:
    pack, _ = real_pack()
    out = tmp_path / "splunk.txt"
    result = runner.invoke(app, ["convert", "--to", "splunk", str(pack), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        "DestinationPort=" in out.read_text()
        and 'QueryName IN ("contentcdns.net", "*.contentcdns.net")' in out.read_text()
    )
    # without a pipeline the Kusto backend names no table: a usage error that says which pipelines
    result = runner.invoke(app, ["convert", "--to", "kusto", "--json", str(pack)])
    assert result.exit_code == 2 and "--pipeline microsoft_xdr" in result.output
    # Defender XDR has no DNS or proxy table: those rules are named, the others converted, exit 1
    result = runner.invoke(app, ["convert", "--to", "kusto", "--pipeline", "microsoft_xdr", str(pack)])
    assert (
        result.exit_code == 1 and "not converted" in result.stderr and "DeviceNetworkEvents" in result.stdout
    )
    result = runner.invoke(app, ["convert", "--to", "no-such-backend", str(pack)])
    assert result.exit_code == 2 and "foxhunt[sigma]" in result.stderr
    result = runner.invoke(app, ["convert", "--to", "splunk", "--pipeline", "nope", str(pack)])
    assert result.exit_code == 2 and "unknown pySigma pipeline" in result.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("title: [unclosed\n")
    result = runner.invoke(app, ["convert", "--to", "splunk", str(broken)])
    assert result.exit_code == 2 and str(broken) in result.stderr
    plain = tmp_path / "plain"
    build([_feed(tmp_path, FEED)], plain)
    result = runner.invoke(app, ["convert", "--to", "splunk", str(plain)])
    assert result.exit_code == 2 and "--format sigma" in result.stderr


def test_convert_refuses_non_rule_yaml_and_bad_or_escaping_manifests(tmp_path: Path) -> None:
    for number, text in enumerate(["- 1\n", "just a string\n", "42\n", "title: x\n---\n- 1\n"]):
        path = tmp_path / f"r{number}.yml"
        path.write_text(text)
        result = runner.invoke(app, ["convert", "--to", "splunk", str(path)])
        assert result.exit_code == 2 and str(path) in result.stderr and "not a Sigma rule" in result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit)
    pack, _ = real_pack()
    (inside,) = [e for e in manifest_files(pack, "sigma") if "dns_query" in e["path"]][:1]
    outside = tmp_path / "x" / "list.yml"
    outside.parent.mkdir()
    outside.write_text((pack / inside["path"]).read_text())  # a real rule, but outside the pack
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "link.yml").symlink_to(outside)
    cases = {
        "[1]": "not a foxhunt manifest",
        '{"files": 3}': "not a foxhunt manifest",
        '{"files": [1]}': "files entry 1 is not an object",
        '{"files": [{"format": "sigma"}]}': "files entry 1 (sigma) has no 'path'",
        '{"files": [{"format": "sigma", "path": "../x/list.yml"}]}': "'../x/list.yml' is outside the pack",
        f'{{"files": [{{"format": "sigma", "path": "{outside}"}}]}}': "is outside the pack",
        '{"files": [{"format": "sigma", "path": "/etc/passwd"}]}': "'/etc/passwd' is outside the pack",
        '{"files": [{"format": "sigma", "path": "link.yml"}]}': "'link.yml' is outside the pack",
        "{not json": "unreadable manifest.json",
    }
    for manifest, message in cases.items():
        (fake / "manifest.json").write_text(manifest)
        result = runner.invoke(app, ["convert", "--to", "splunk", str(fake)])
        assert result.exit_code == 2, (manifest, result.output)
        assert message in result.stderr and str(fake / "manifest.json") in result.stderr, result.stderr
    # the same rule listed by a path inside the pack converts
    (fake / "rule.yml").write_text(outside.read_text())
    (fake / "manifest.json").write_text('{"files": [{"format": "sigma", "path": "./rule.yml"}]}')
    result = runner.invoke(app, ["convert", "--to", "splunk", str(fake)])
    assert result.exit_code == 0 and "QueryName" in result.stdout, result.output
