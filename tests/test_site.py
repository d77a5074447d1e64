"""`foxhunt site`: the pack as a static website, opened from disk by a real headless Chromium.

The browser is Debian's chromium driven by Playwright's Python package (never `playwright install`).
Expectations about the families come from the raw 2022 ThreatFox dump, not from the site's own code.
Screenshots of every kind of page go to `test-artifacts/` in the repository.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from foxhunt.build import build
from foxhunt.cli.app import app
from foxhunt.normalize import defang
from foxhunt.vetting import MaxAge, Vetter

ROOT = Path(__file__).resolve().parents[1]
DUMP_2022 = ROOT / "src" / "foxhunt" / "data" / "threatfox-2022-02-20.json"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
runner = CliRunner()


# --- shared with test_report.py ------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium under Playwright; a missing browser or package fails, never skips."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium (.ci/run does)",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]'", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@contextmanager
def opened(browser, path: Path, *, width: int = 1280, clipboard: bool = False) -> Iterator[tuple]:
    """A page showing `path` (file://) and the list of problems it reported: console errors, uncaught
    exceptions, failed requests."""
    context = browser.new_context(
        viewport={"width": width, "height": 900},
        permissions=["clipboard-read", "clipboard-write"] if clipboard else [],
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(path.resolve().as_uri())
    try:
        yield page, problems
    finally:
        context.close()


def screenshot(page, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo pack: the bundled 2022 dump, vetted without expiry."""
    out = tmp_path_factory.mktemp("pack") / "packs"
    build([DUMP_2022], out, vetter=Vetter(max_age=MaxAge.disabled()))  # what `foxhunt demo` builds
    return out


@pytest.fixture(scope="module")
def site(pack: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    result = runner.invoke(app, ["site", str(pack), "-o", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["families"] == 20
    return out


@pytest.fixture(scope="module")
def dump() -> list[dict]:
    return json.loads(DUMP_2022.read_text(encoding="utf-8"))


def small_pack(
    pack: Path, copy: Path, slugs: tuple[str, ...] = ("win-qakbot", "win-vidar", "win-remcos")
) -> Path:
    """A copy of `pack` holding only the families `slugs` (its manifest trimmed to match): fast to render."""
    shutil.copytree(pack, copy, ignore=lambda d, names: [n for n in names if Path(d) == pack and
                                                          (pack / n).is_dir() and n not in slugs])  # fmt: skip
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["families"] = [f for f in manifest["families"] if f["slug"] in slugs]
    manifest["rules"] = [r for r in manifest["rules"] if r["family"] in (*slugs, None)]
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return copy


def squeezed(text: str) -> str:
    """`text` without whitespace: rich wraps long error lines anywhere."""
    return "".join(text.split())


def visible_families(page) -> list[str]:
    return page.locator("#families tbody tr:visible th a").all_text_contents()


# --- the site's files -----------------------------------------------------------------------------


def test_every_family_has_a_page_and_every_manifest_file_is_copied(pack: Path, site: Path) -> None:
    manifest = json.loads((pack / "manifest.json").read_text(encoding="utf-8"))
    marker = json.loads((site / "site.json").read_text(encoding="utf-8"))
    assert marker["kind"] == "foxhunt-site"
    (site.parent / "plain").mkdir()
    assert site.stat().st_mode == (site.parent / "plain").stat().st_mode  # shareable, not a 0700 temp dir
    for family in manifest["families"]:
        page = (site / "families" / f"{family['slug']}.html").read_text(encoding="utf-8")
        assert f'href="../pack/{family["slug"]}/iocs.csv"' in page
    listed = [r["path"] for r in manifest["rules"]]
    listed += [w for f in manifest["families"] for w in f["watchlists"]]
    for path in listed:
        assert (site / "pack" / path).read_bytes() == (pack / path).read_bytes(), path
    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="pack/sentinel-arm.json"' in index
    assert not [
        p for p in site.rglob("*.html") if "http://" in _asset_refs(p) or "https://" in _asset_refs(p)
    ]


def _asset_refs(page: Path) -> str:
    """The src= and stylesheet references of a page (links to Malpedia or references are fine)."""
    text = page.read_text(encoding="utf-8")
    return " ".join(part.split('"')[1] for part in text.split("src=")[1:]) + " ".join(
        line for line in text.splitlines() if 'rel="stylesheet"' in line
    )


def test_downloads_list_every_format_the_manifest_names(pack: Path, tmp_path: Path) -> None:
    """Formats foxhunt's site does not know yet (sigma, stix...) are offered as soon as the manifest lists them."""
    copy = tmp_path / "pack"
    small_pack(pack, copy)
    (copy / "win-qakbot" / "sigma").mkdir()
    (copy / "win-qakbot" / "sigma" / "qakbot-dns.yml").write_text("title: qakbot\n", encoding="utf-8")
    (copy / "stix").mkdir()
    (copy / "stix" / "bundle.json").write_text('{"type": "bundle"}\n', encoding="utf-8")
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"] = [
        {"path": "win-qakbot/sigma/qakbot-dns.yml", "format": "sigma", "family": "win-qakbot"},
        {"path": "stix/bundle.json", "format": "stix", "family": None},
    ]
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    out = tmp_path / "site"
    result = runner.invoke(app, ["site", str(copy), "-o", str(out)])
    assert result.exit_code == 0, result.output
    qakbot = (out / "families" / "win-qakbot.html").read_text(encoding="utf-8")
    assert "Sigma rules" in qakbot and 'href="../pack/win-qakbot/sigma/qakbot-dns.yml"' in qakbot
    assert (out / "pack" / "win-qakbot" / "sigma" / "qakbot-dns.yml").read_text() == "title: qakbot\n"
    assert "STIX 2.1 bundles" in (out / "index.html").read_text(encoding="utf-8")
    assert (out / "pack" / "stix" / "bundle.json").is_file()
    assert "qakbot-dns.yml" not in (out / "families" / "win-vidar.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda p: (p / "manifest.json").unlink(), "manifest.json"),
        (lambda p: (p / "manifest.json").write_text("{not json", encoding="utf-8"), "manifest.json"),
        (
            lambda p: (p / "manifest.json").write_text('{"families": 3, "rules": []}', encoding="utf-8"),
            "families",
        ),
        (lambda p: (p / "win-vidar" / "iocs.csv").unlink(), "win-vidar/iocs.csv"),
        (
            lambda p: (p / "win-vidar" / "iocs.csv").write_text("ioc_type,value\nurl,http://x.example/\n"),
            "win-vidar/iocs.csv: record 1: no threat_type",
        ),
        (lambda p: next((p / "win-vidar" / "hunting").glob("*.kql")).unlink(), "is missing from the pack"),
        (
            lambda p: _edit_manifest(p, lambda m: m["rules"][0].update(path="../../etc/passwd")),
            "leaves the pack",
        ),
        (
            lambda p: _edit_manifest(p, lambda m: m["families"][0].update(slug="../x")),
            "not a safe folder name",
        ),
        (lambda p: _symlink_out(next((p / "win-vidar" / "hunting").glob("*.kql"))), "symbolic link"),
        (lambda p: _symlink_out(p / "win-vidar" / "README.md"), "symbolic link"),
    ],
    ids=[
        "no-manifest",
        "broken-json",
        "wrong-shape",
        "no-iocs-csv",
        "short-iocs-csv",
        "missing-rule-file",
        "escaping-path",
        "bad-slug",
        "symlinked-rule-file",
        "symlinked-page",
    ],
)
def test_a_bad_pack_is_named_and_exits_2(pack: Path, tmp_path: Path, damage, named: str) -> None:
    copy = tmp_path / "pack"
    small_pack(pack, copy)
    damage(copy)
    result = runner.invoke(app, ["site", str(copy), "-o", str(tmp_path / "site")])
    assert result.exit_code == 2
    assert squeezed(named) in squeezed(result.stderr)
    assert not (tmp_path / "site").exists()


def _symlink_out(path: Path) -> None:
    """Replace a pack file by a symbolic link to a file outside the pack."""
    outside = path.parents[3] / "outside-secret.txt"
    outside.write_text("secret\n")
    path.unlink()
    path.symlink_to(outside)


def _edit_manifest(pack: Path, change) -> None:
    manifest = json.loads((pack / "manifest.json").read_text(encoding="utf-8"))
    change(manifest)
    (pack / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_output_replaces_only_a_previous_site(pack: Path, tmp_path: Path) -> None:
    pack = small_pack(pack, tmp_path / "pack")
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me", encoding="utf-8")
    result = runner.invoke(app, ["site", str(pack), "-o", str(precious)])
    assert result.exit_code == 2 and squeezed("not a foxhunt site") in squeezed(result.stderr)
    assert [p.name for p in precious.iterdir()] == ["todo.txt"]
    assert runner.invoke(app, ["site", str(pack), "-o", str(pack)]).exit_code == 2
    out = tmp_path / "site"
    assert runner.invoke(app, ["site", str(pack), "-o", str(out)]).exit_code == 0
    (out / "stale.html").write_text("old", encoding="utf-8")
    assert runner.invoke(app, ["site", str(pack), "-o", str(out)]).exit_code == 0
    assert not (out / "stale.html").exists() and (out / "index.html").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site.")]


# --- in the browser -------------------------------------------------------------------------------


def test_index_lists_the_20_families_and_search_and_filters_narrow_it(
    browser, site: Path, dump: list[dict]
) -> None:
    names = {r["malware_printable"] for r in dump}
    by_type: dict[str, set[str]] = defaultdict(set)
    by_threat: dict[str, set[str]] = defaultdict(set)
    confident = {r["malware_printable"] for r in dump if (r["confidence_level"] or 0) >= 100}
    for record in dump:
        by_type[record["ioc_type"]].add(record["malware_printable"])
        by_threat[record["threat_type"]].add(record["malware_printable"])
    with opened(browser, site / "index.html") as (page, problems):
        assert len(names) == 20
        assert sorted(visible_families(page)) == sorted(names)
        screenshot(page, "site-index")

        page.fill("#f-q", "cobalt")
        assert visible_families(page) == ["Cobalt Strike"]
        cobalt_ip = next(
            r["ioc"] for r in dump if r["malware"] == "win.cobalt_strike" and r["ioc_type"] == "ip:port"
        )
        page.fill("#f-q", defang(cobalt_ip))  # a defanged IOC value finds its family
        assert visible_families(page) == ["Cobalt Strike"]
        page.fill("#f-q", "no-such-family-or-ioc")
        assert visible_families(page) == [] and page.is_visible("#no-results")
        page.fill("#f-q", "")

        page.select_option("#f-type", "sha256_hash")
        assert sorted(visible_families(page)) == sorted(by_type["sha256_hash"])
        screenshot(page, "site-index-filtered", full_page=False)
        page.select_option("#f-type", "")
        page.select_option("#f-threat", "payload")
        assert sorted(visible_families(page)) == sorted(by_threat["payload"])
        page.select_option("#f-threat", "")
        page.fill("#f-conf", "100")
        assert sorted(visible_families(page)) == sorted(confident)
        assert len(confident) < 20  # the filter really removed some
        page.fill("#f-conf", "0")
        page.select_option("#f-family", "win-vidar")
        assert visible_families(page) == ["Vidar"]
        page.click("button[type=reset]")
        from playwright.sync_api import expect

        # the page filters again just after the form's reset event (setTimeout 0): wait for it
        expect(page.locator("#families tbody tr:visible th a")).to_have_count(20)
        assert sorted(visible_families(page)) == sorted(names)
        assert problems == []


def test_index_counts_follow_the_filters(browser, site: Path, dump: list[dict]) -> None:
    cobalt = [r for r in dump if r["malware"] == "win.cobalt_strike"]
    urls = sum(1 for r in cobalt if r["ioc_type"] == "url")
    with opened(browser, site / "index.html") as (page, problems):
        page.select_option("#f-type", "url")
        row = page.locator("tr[data-slug=win-cobalt-strike] .count")
        assert row.text_content() == f"{urls} of {len(cobalt)}"
        assert problems == []


def copied(page, button) -> str:
    """Click a copy button on an emptied clipboard; once the button says it copied, what the clipboard holds."""
    page.evaluate("navigator.clipboard.writeText('')")
    button.click()
    button.filter(has_text="Copied").wait_for()
    return page.evaluate("navigator.clipboard.readText()")


def test_family_page_shows_its_kql_and_the_copy_buttons_copy(browser, pack: Path, site: Path) -> None:
    with opened(browser, site / "families" / "win-cobalt-strike.html", clipboard=True) as (page, problems):
        assert page.locator("h1").text_content().startswith("Cobalt Strike")
        query = page.locator("section.query").first
        href = query.locator("p.file a").first.get_attribute("href")
        kql = (pack / href.removeprefix("../pack/")).read_text(encoding="utf-8")
        code = query.locator("pre.kql code").first
        assert code.text_content() == kql.rstrip("\n")
        assert "where" in query.locator("pre.kql .k").all_text_contents()  # highlighted
        screenshot(page, "site-family-cobalt-strike", full_page=False)

        assert copied(page, query.locator("button.copy").first) == kql.rstrip("\n")

        row = page.locator("#ioc-table tbody tr").first
        real = row.locator("button.copy").get_attribute("data-copy")
        assert row.locator("code.ioc").text_content() == defang(real) != real
        assert copied(page, row.locator("button.copy")) == real

        page.fill("#ioc-filter", defang(real))
        assert page.locator("#ioc-table tbody tr:visible").count() == 1
        for section in ("IOC summary", "IOCs", "Hunting queries", "Tables and data connectors",
                        "False-positive scenarios", "Analytics rules", "Downloads", "Vetting notes"):  # fmt: skip
            assert page.get_by_role("heading", name=section, exact=True).count() == 1, section
        assert page.locator("#connectors + p + .table-scroll tbody tr").count() > 0
        assert problems == []


def test_pages_fit_a_phone_and_print_without_controls(browser, site: Path) -> None:
    for name in ("index.html", "families/win-remcos.html"):
        with opened(browser, site / name, width=390) as (page, problems):
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{name} is {overflow}px wider than a phone"
            screenshot(page, f"site-phone-{Path(name).stem}", full_page=False)
            page.emulate_media(media="print")
            assert page.locator("button.copy").first.is_hidden()
            assert page.locator("#filters, #ioc-filter").first.is_hidden()
            assert problems == []


def test_hostile_pack_text_is_escaped(browser, pack: Path, tmp_path: Path) -> None:
    """Names and IOC values from a feed are data: they never become markup or script in the site."""
    copy = tmp_path / "pack"
    small_pack(pack, copy)
    payload = "<img src=x onerror=\"document.title='pwned'\">"
    _edit_manifest(copy, lambda m: m["families"][0].update(name=f"Evil{payload}", aliases=[payload]))
    csv_path = copy / m_slug(copy) / "iocs.csv"
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    row = dict.fromkeys(header, "")
    row |= {"ioc_type": "url", "value": f"http://evil.example/{payload}", "threat_type": "payload_delivery",
            "malware": "x", "malware_printable": "x", "confidence": "50", "reference": "javascript:alert(1)",
            "tags": payload}  # fmt: skip
    lines.append(",".join('"' + row[h].replace('"', '""') + '"' for h in header))
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "site"
    assert runner.invoke(app, ["site", str(copy), "-o", str(out)]).exit_code == 0
    for page_path in (out / "index.html", out / "families" / f"{m_slug(copy)}.html"):
        assert "<img src=x" not in page_path.read_text(encoding="utf-8")
        with opened(browser, page_path) as (page, problems):
            assert page.title() != "pwned"
            assert page.locator("img").count() == 0
            assert page.locator("a[href^='javascript:']").count() == 0
            assert problems == []


def m_slug(pack: Path) -> str:
    return json.loads((pack / "manifest.json").read_text(encoding="utf-8"))["families"][0]["slug"]
