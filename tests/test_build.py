"""`foxhunt build` end to end on real ThreatFox data: packs, pages, rules, manifest, atomic output."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from foxhunt.build import OutputError, build
from foxhunt.cli.app import app
from foxhunt.fsutil import BackgroundWriter, atomic_write_text
from foxhunt.rules.planner import QUERY_LIMIT

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "threatfox"
BUNDLED = Path(__file__).resolve().parents[1] / "src" / "foxhunt" / "data" / "threatfox-2022-02-20.json"
DUMP_2022 = SHARED / "api-get_iocs-2022-02-20.json" if SHARED.exists() else BUNDLED
SEED_CSV = SHARED / "seed-fakeupdates.csv"


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dump_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dump") / "packs"
    build([DUMP_2022], out)
    return out


@pytest.fixture(scope="module")
def seed_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SEED_CSV.exists():
        pytest.skip("../shared/data/threatfox/seed-fakeupdates.csv is not beside the repository")
    out = tmp_path_factory.mktemp("seed") / "packs"
    build([SEED_CSV], out)
    return out


def all_kql(pack: Path) -> list[tuple[str, str, str]]:
    """(id, kql, platform) of every query the pack emits: hunting files, rule queries, page exclusions."""
    manifest = json.loads((pack / "manifest.json").read_text())
    queries = []
    for entry in manifest["rules"]:
        path = pack / entry["path"]
        if entry["format"] == "kql":
            queries.append((entry["path"], path.read_text(), entry["platform"]))
        elif entry["format"] == "sentinel-yaml":
            queries.append((entry["path"], yaml.safe_load(path.read_text())["query"], "sentinel"))
        elif entry["format"] == "arm":
            for resource in json.loads(path.read_text())["resources"]:
                queries.append(
                    (f"{entry['path']}:{resource['name']}", resource["properties"]["query"], "sentinel")
                )
    for family in manifest["families"]:
        page = (pack / family["page"]).read_text()
        for n, (table, expression) in enumerate(
            re.findall(r"^(\w+):\n\n```kql\n\| where not\((.*)\)\n```", page, re.M)
        ):
            queries.append(
                (f"{family['page']}#fp{n}", f"{table} | where not({expression}) | take 1", "sentinel")
            )
    return queries


def test_dump_gives_20_family_packs_with_all_452_iocs(dump_pack: Path) -> None:
    source = json.loads(DUMP_2022.read_text())
    manifest = json.loads((dump_pack / "manifest.json").read_text())
    assert len(manifest["families"]) == len({r["malware"] for r in source}) == 20
    assert sum(f["ioc_count"] for f in manifest["families"]) == len(source) == 452
    assert manifest["rejected"] == 0
    assert {r["kind"] for r in manifest["rules"]} == {"hunting", "analytic"}
    for family in manifest["families"]:
        with (dump_pack / family["slug"] / "iocs.csv").open() as handle:
            assert sum(1 for _ in csv.DictReader(handle)) == family["ioc_count"]
        assert (dump_pack / family["page"]).is_file()
    for entry in manifest["rules"]:
        assert (dump_pack / entry["path"]).is_file(), entry["path"]


def test_every_emitted_query_passes_the_kusto_parser(dump_pack: Path, seed_pack: Path, kql_oracle) -> None:
    for pack in (dump_pack, seed_pack):
        queries = all_kql(pack)
        assert any("#fp" in q[0] for q in queries), "no false-positive exclusion found on the pages"
        for platform in ("sentinel", "defender"):
            unique = {kql: qid for qid, kql, p in queries if p == platform}  # ARM repeats the YAML queries
            batch = [(qid, kql) for kql, qid in unique.items()]
            results = kql_oracle.check(batch, platform=platform)
            errors = {qid: [str(d) for d in diags] for qid, diags in results.items() if diags}
            assert not errors, errors
            assert len(results) == len(batch)


def test_rule_queries_fit_sentinel_limit_and_ids_are_stable(dump_pack: Path) -> None:
    manifest = json.loads((dump_pack / "manifest.json").read_text())
    ids = [r["id"] for r in manifest["rules"]]
    assert len(ids) == len(set(ids))
    for entry in manifest["rules"]:
        if entry["format"] == "sentinel-yaml":
            rule = yaml.safe_load((dump_pack / entry["path"]).read_text())
            assert len(rule["query"]) <= QUERY_LIMIT
            assert rule["id"] == entry["id"]
            assert rule["kind"] == "Scheduled"
            assert rule["requiredDataConnectors"][0]["dataTypes"] == [entry["table"]]
            projected = re.findall(r"^\| project (.*)$", rule["query"], re.M)[-1].split(", ")
            for mapping in rule["entityMappings"]:
                for field in mapping["fieldMappings"]:
                    assert field["columnName"] in projected, (entry["path"], field["columnName"])


def test_build_is_deterministic(dump_pack: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build([DUMP_2022], again)
    assert tree_digest(again) == tree_digest(dump_pack)


def test_seed_page_has_every_section_and_none_of_the_seed_defects(seed_pack: Path) -> None:
    page = (seed_pack / "js-fakeupdates" / "README.md").read_text()
    for section in ("## IOC summary", "## IOCs", "## Hunting queries", "## Tables and data connectors",
                    "## False-positive scenarios", "## Analytics rules"):  # fmt: skip
        assert section in page
    assert "138[.]124[.]79[.]146:443" in page and "cpanel[.]houston-familyoffice[.]com" in page
    kql_blocks = re.findall(r"```kql\n(.*?)```", page, re.S)
    hunting = [b for b in kql_blocks if "let lookback" in b]
    assert hunting and all("ago(lookback)" in b for b in hunting)
    assert not any(re.search(r"\b(has_any|has|contains)\b", b) for b in hunting)
    ip_port = [b for b in hunting if "ioc_endpoints" in b and '"ip_only"' not in b]
    assert ip_port and all("endpoint(" in b and "Port" in b for b in ip_port)
    domain_tables = {re.search(r"^(\w+)\n\| where", b, re.M).group(1) for b in hunting if "ioc_domains" in b}
    assert {"DnsEvents", "DeviceNetworkEvents", "CommonSecurityLog", "UrlClickEvents"} <= domain_tables
    assert "Ensure this data connector is enabled" not in page
    for prose_field in ("file.download.server", "process.name", "destination.host", "file.name"):
        assert prose_field not in page
    for scenario in ("Scheduled system update job", "patch", "Log collection", "Backup", "CI/CD"):
        assert scenario.lower() in page.lower()
    assert page.endswith("\n") and page.count("```") % 2 == 0


def test_failed_build_leaves_previous_output_intact(dump_pack: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "packs"
    build([DUMP_2022], out)
    before = tree_digest(out)

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("foxhunt.build.write_pack", explode)
    with pytest.raises(RuntimeError):
        build([SEED_CSV if SEED_CSV.exists() else DUMP_2022], out)
    assert tree_digest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["packs"]  # no staging directory left behind


def test_a_write_failing_in_the_background_fails_the_build_and_keeps_the_old_pack(
    tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "packs"
    build([DUMP_2022], out)
    before = tree_digest(out)
    real_write = BackgroundWriter._write
    written: list[Path] = []

    def disk_fills_up(self, path: Path, text: str) -> None:
        if len(written) == 40:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        real_write(self, path, text)

    monkeypatch.setattr(BackgroundWriter, "_write", disk_fills_up)
    with pytest.raises(OutputError, match="No space left on device"):
        build([DUMP_2022], out)
    assert len(written) == 40  # the writer stopped at the failure, it did not go on writing
    assert tree_digest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["packs"]


def test_background_writer_writes_every_file_in_order_within_its_memory_bound(tmp_path: Path) -> None:
    texts = {f"f{i % 7}/{i}.txt": f"{i}\n" * (i % 50) for i in range(500)}
    with BackgroundWriter(tmp_path, max_pending=64) as writer:
        for relative, text in texts.items():
            writer.write(relative, text)
            assert writer._pending <= max(64, len(text))
    assert {str(p.relative_to(tmp_path)): p.read_text() for p in tmp_path.rglob("*.txt")} == texts
    with BackgroundWriter(tmp_path) as writer:  # a later write of the same path wins
        writer.write("f0/0.txt", "first")
        writer.write("f0/0.txt", "second")
    assert (tmp_path / "f0" / "0.txt").read_text() == "second"


def test_background_writer_raises_a_failed_write_at_the_next_call(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where a folder should go")
    writer = BackgroundWriter(tmp_path)
    writer.write("taken/x.txt", "text")
    with pytest.raises(OSError):
        for _ in range(1000):  # the failure reaches the producer as soon as the thread has hit it
            writer.write("ok.txt", "text")
            writer._thread.join(0.01)
    with pytest.raises(OSError):
        writer.close()


runner = CliRunner()


def test_cli_exit_codes(tmp_path: Path) -> None:
    missing = runner.invoke(
        app, ["build", "--no-vet", "--no-vet", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o")]
    )
    assert missing.exit_code == 2 and "nope.csv" in missing.output
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    refused = runner.invoke(
        app, ["build", "--no-vet", "--no-vet", str(DUMP_2022), "-o", str(tmp_path / "mine")]
    )
    assert refused.exit_code == 2 and (tmp_path / "mine" / "notes.txt").exists()
    ok = runner.invoke(
        app, ["build", "--no-vet", "--no-vet", str(DUMP_2022), "-o", str(tmp_path / "o"), "--summary", "json"]
    )
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout)
    assert summary["families"] == 20 and summary["iocs"] == 452
    bad = tmp_path / "bad.csv"
    bad.write_text(
        SEED_CSV.read_text().replace("138.124.79.146:443", "138.124.79.256:443") if SEED_CSV.exists() else ""
    )
    if SEED_CSV.exists():
        strict = runner.invoke(
            app, ["build", "--no-vet", "--no-vet", str(bad), "-o", str(tmp_path / "s"), "--strict"]
        )
        assert strict.exit_code == 1
        assert "record 1" in strict.output and "138.124.79.256" in strict.output


@pytest.mark.skipif(not SEED_CSV.exists(), reason="shared seed CSV not available")
def test_the_console_script_flushes_its_output_and_keeps_its_exit_code(tmp_path: Path) -> None:
    """`main` ends a build without freeing what it built (os._exit): the piped summary must be whole
    and the exit codes those of the command."""
    script = Path(sys.executable).with_name("foxhunt")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "foxhunt.cli.app"]
    ok = subprocess.run(
        [*command, "build", "--no-vet", str(DUMP_2022), "-o", str(tmp_path / "o"), "--summary", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["iocs"] == 452
    bad = tmp_path / "bad.csv"
    bad.write_text(SEED_CSV.read_text().replace("138.124.79.146:443", "138.124.79.256:443"))
    strict = subprocess.run(
        [*command, "build", "--no-vet", str(bad), "-o", str(tmp_path / "s"), "--strict", "--summary", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert strict.returncode == 1
    assert json.loads(strict.stdout)["rejected"] == 1 and "138.124.79.256" in strict.stderr


def test_filters_select_iocs(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "build",
            "--no-vet",
            str(DUMP_2022),
            "-o",
            str(tmp_path / "o"),
            "--family",
            "Mirai",
            "--ioc-type",
            "url",
            "--summary",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    source = json.loads(DUMP_2022.read_text())
    assert json.loads(result.stdout)["iocs"] == sum(
        1 for r in source if r["malware_printable"] == "Mirai" and r["ioc_type"] == "url"
    )


def test_demo_runs_on_bundled_data(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "-o", str(tmp_path / "demo"), "--summary", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["families"] == 20
    assert (tmp_path / "demo" / "index.md").is_file()


def test_selection_matching_nothing_fails_and_keeps_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "packs"
    build([DUMP_2022], out)
    before = tree_digest(out)
    result = runner.invoke(
        app, ["build", "--no-vet", "--no-vet", str(DUMP_2022), "-o", str(out), "--family", "no-such-family"]
    )
    assert result.exit_code == 2 and "selection" in result.output
    assert tree_digest(out) == before


def test_family_can_be_selected_by_alias(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "build",
            "--no-vet",
            "--no-vet",
            str(DUMP_2022),
            "-o",
            str(tmp_path / "o"),
            "--family",
            "BEACON",
            "--summary",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    source = json.loads(DUMP_2022.read_text())
    assert json.loads(result.stdout)["iocs"] == sum(
        1 for r in source if "BEACON" in (r.get("malware_alias") or "")
    )


def test_an_ioc_too_long_for_an_inline_query_moves_its_family_to_a_watchlist(tmp_path: Path) -> None:
    record = {"id": "1", "ioc": "http://long.example.com/" + "a" * 8000, "ioc_type": "url",
              "threat_type": "payload_delivery", "malware": "win.x", "malware_printable": "X",
              "confidence_level": 80, "first_seen": "2026-11-01 00:00:00 UTC"}  # fmt: skip
    feed = tmp_path / "feed.json"
    feed.write_text(json.dumps([record, dict(record, id="2", ioc="http://short.example.com/x")]))
    result = build([feed], tmp_path / "out")
    (family,) = result.manifest["families"]
    rules = [r for r in result.manifest["rules"] if r["format"] == "sentinel-yaml"]
    queries = [yaml.safe_load((tmp_path / "out" / r["path"]).read_text())["query"] for r in rules]
    assert family["watchlists"] and queries and all(len(query) <= QUERY_LIMIT for query in queries)
    rows = (tmp_path / "out" / family["watchlists"][0]).read_text()
    assert record["ioc"] in rows


def test_pack_directory_gets_a_normal_mode_not_a_temp_dirs(tmp_path: Path) -> None:
    out = tmp_path / "packs"
    build([BUNDLED], out, vetter=None)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    atomic_write_text(tmp_path / "report.txt", "shared\n")  # hunt -o, vet -o: files to share
    assert (tmp_path / "report.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_family_name_with_line_breaks_cannot_break_out_of_a_kql_comment(tmp_path: Path, kql_oracle) -> None:
    hostile = 'Q"uote\n| take 1 //\r\u2028evil\x00name'
    record = {"id": "1", "ioc": "bad-c2.example.com", "ioc_type": "domain", "threat_type": "botnet_cc",
              "malware": "win.q", "malware_printable": hostile, "confidence_level": 80,
              "first_seen": "2026-11-01 00:00:00 UTC"}  # fmt: skip
    feed = tmp_path / "feed.json"
    feed.write_text(json.dumps([record]))
    build([feed], tmp_path / "out")
    queries = all_kql(tmp_path / "out")
    for platform in ("sentinel", "defender"):
        batch = [(qid, kql) for qid, kql, p in queries if p == platform]
        assert batch and not {q: d for q, d in kql_oracle.check(batch, platform=platform).items() if d}
    for qid, kql, _ in queries:  # the name only ever appears inside a comment line
        assert all(
            line.startswith("//") for line in kql.splitlines() if 'Q"uote' in line or "evil" in line
        ), qid


def test_the_page_shows_feed_text_inert(tmp_path: Path) -> None:
    """Feed fields end up in a Markdown page: no raw HTML, no javascript: links, one-line headings."""
    record = {"id": "1", "ioc": "bad-c2.example.com", "ioc_type": "domain", "threat_type": "botnet_cc",
              "malware": "win.h", "malware_printable": "</script><script>alert(2)</script>\n# x",
              "malware_malpedia": "javascript:alert(4)", "reference": "javascript:alert(3)",
              "confidence_level": 80, "first_seen": "2026-11-01 00:00:00 UTC"}  # fmt: skip
    feed = tmp_path / "feed.json"
    feed.write_text(json.dumps([record]))
    build([feed], tmp_path / "out")
    page = next((tmp_path / "out").glob("*/README.md")).read_text()
    prose = "".join(part for n, part in enumerate(page.split("```")) if n % 2 == 0)  # code blocks are inert
    assert "<script>" in page and "<script>" not in prose and "](javascript:" not in page
    assert page.startswith(
        "# &lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt; # x: ThreatFox hunting pack\n"
    )


def test_a_second_build_to_the_same_output_fails_while_the_first_runs(tmp_path: Path) -> None:
    from foxhunt.fsutil import output_lock

    out = tmp_path / "packs"
    build([DUMP_2022], out)
    before = tree_digest(out)
    with output_lock(out):  # as a first build holds it
        with pytest.raises(OutputError, match="another foxhunt run is writing"):
            build([DUMP_2022], out)
        assert tree_digest(out) == before
    build([DUMP_2022], out)  # released: builds again
    assert [p.name for p in tmp_path.iterdir()] == ["packs"]  # the lock file goes with the lock


def test_the_writer_does_not_rebuild_a_staging_folder_removed_under_it(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "staged"
    root.mkdir()
    with pytest.raises(FileNotFoundError, match="removed while written"), BackgroundWriter(root) as writer:
        writer.write("fam-a/README.md", "a")
        writer._thread.join(0.2)
        shutil.rmtree(root)
        writer.write("fam-b/README.md", "b")
    assert not root.exists()
