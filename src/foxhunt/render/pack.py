"""Write rule packs: per family a page, hunting KQL, Sentinel rules, watchlists and the IOC list."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from foxhunt.catalog.scenarios import load_scenarios, scenarios_for
from foxhunt.fsutil import BackgroundWriter
from foxhunt.model import Ioc, Reject
from foxhunt.render.formats import DEFAULT_FORMATS as DEFAULT_FORMATS  # re-exported: sentinel + the others
from foxhunt.render.formats import FORMATS as FORMATS
from foxhunt.render.formats import FormatWriter
from foxhunt.render.outputs import csv_text
from foxhunt.render.page import render_page
from foxhunt.render.sentinel import ArmBatch, ArmBatcher, render_rule_yaml
from foxhunt.render.vetting import VettingNote, render_vetting, vetting_row
from foxhunt.rules.planner import WATCHLIST_COLUMNS, FamilyPlan
from foxhunt.vetting.expiry import MaxAge

PACK_ALLOWLIST = "allowlist.yaml"

IOC_COLUMNS = (
    "ioc_type", "value", "threat_type", "malware", "malware_printable", "confidence",
    "first_seen", "last_seen", "threatfox_id", "reference", "tags", "reporter",
)  # fmt: skip


def _ioc_row(ioc: Ioc) -> tuple[object, ...]:
    return (
        ioc.ioc_type.value, ioc.value, ioc.threat_type, ioc.malware, ioc.malware_printable,
        "" if ioc.confidence is None else ioc.confidence,
        ioc.first_seen.isoformat() if ioc.first_seen else "", ioc.last_seen.isoformat() if ioc.last_seen else "",
        ioc.threatfox_id or "", ioc.reference or "", ",".join(ioc.tags), ioc.reporter or "",
    )  # fmt: skip


def _hunting_path(table: str, variant: str, platform: str) -> str:
    folder = "hunting" if platform == "sentinel" else "hunting/defender"
    return f"{folder}/{table}-{variant}.kql"


def write_family(
    writer: BackgroundWriter, plan: FamilyPlan, sources: Sequence[str], vetting: Sequence[VettingNote] = ()
) -> list[dict]:
    """Write one family's folder under `root`; return its manifest rule entries."""
    slug = plan.family.slug
    files: dict[str, str] = {}
    rules: list[dict] = []
    for query in plan.hunting:
        files[query.id] = _hunting_path(query.table, query.variant, query.platform)
        writer.write(f"{slug}/{files[query.id]}", query.kql)
        rules.append(
            {"id": query.id, "family": slug, "kind": "hunting", "table": query.table, "variant": query.variant,
             "platform": query.platform, "ioc_types": list(query.ioc_types), "path": f"{slug}/{files[query.id]}",
             "format": "kql"}
        )  # fmt: skip
    for rule in plan.analytics:
        files[rule.id] = f"sentinel/{rule.table}-{rule.variant}.yaml"
        writer.write(f"{slug}/{files[rule.id]}", render_rule_yaml(rule))
        rules.append(
            {"id": rule.id, "family": slug, "kind": "analytic", "table": rule.table, "variant": rule.variant,
             "platform": "sentinel", "ioc_types": list(rule.ioc_types), "path": f"{slug}/{files[rule.id]}",
             "format": "sentinel-yaml", "severity": rule.severity}
        )  # fmt: skip
    for watchlist in plan.watchlists:
        writer.write(f"{slug}/watchlists/{watchlist.alias}.csv", csv_text(WATCHLIST_COLUMNS, watchlist.rows))
    writer.write(f"{slug}/iocs.csv", csv_text(IOC_COLUMNS, [_ioc_row(i) for i in plan.family.iocs]))
    tables = sorted({q.table for q in plan.hunting})
    threat_types = sorted(plan.family.threat_types)
    scenarios = scenarios_for(sorted(plan.family.ioc_types), tables, threat_types)
    writer.write(f"{slug}/README.md", render_page(plan, files, scenarios, sources, vetting))
    return rules


def _index(families: Sequence[dict], rejected: int, vetting: dict[str, int]) -> str:
    lines = [
        "# foxhunt rule packs",
        "",
        f"{len(families)} malware families, {sum(f['ioc_count'] for f in families)} IOCs"
        + (f"; {rejected} input records rejected (see rejected.csv)" if rejected else "")
        + (
            f"; vetting dropped {vetting['drop']} and flagged {vetting['flag']} IOCs (see vetting.md)."
            if any(vetting.values())
            else "."
        ),
        "",
        "| Family | IOCs | IOC types | Hunting queries | Analytics rules |",
        "|---|---|---|---|---|",
    ]
    for family in families:
        types = ", ".join(f"{t} {n}" for t, n in family["ioc_types"].items())
        lines.append(
            f"| [{family['name']}]({family['page']}) | {family['ioc_count']} | {types} | "
            f"{family['hunting_queries']} | {family['analytics_rules']} |"
        )
    lines += ["", "Deploy every analytics rule at once: `sentinel-arm.json` (see the foxhunt README).", ""]
    return "\n".join(lines)


def write_pack(
    root: Path,
    plans: Iterable[FamilyPlan],
    sources: Sequence[str],
    rejects: Sequence[Reject],
    vetting: Sequence[VettingNote] = (),
    formats: Sequence[str] = DEFAULT_FORMATS,
    max_age: MaxAge | None = None,
    allowlist: str | None = None,
) -> dict:
    """Write every family, the index, the ARM templates and the manifest into `root` (an empty dir).

    `plans` may be a generator: each family is written as soon as it is planned and then let go, so
    memory holds one family's queries at a time. `formats` names the output formats beyond the page
    and IOC list (see FORMATS); `max_age`, the expiry policy, sets their expiry times. `allowlist`, the
    text of the org allowlist the IOCs were vetted with, is kept as `allowlist.yaml` (hunt --pack applies
    its table exclusions). Files are written by a background thread while the next ones are rendered."""
    load_scenarios()  # fail early on a broken scenario library
    with BackgroundWriter(root) as writer:
        return _write_pack(writer, plans, sources, rejects, vetting, formats, max_age, allowlist)


def _write_pack(
    writer: BackgroundWriter,
    plans: Iterable[FamilyPlan],
    sources: Sequence[str],
    rejects: Sequence[Reject],
    vetting: Sequence[VettingNote],
    formats: Sequence[str],
    max_age: MaxAge | None,
    allowlist: str | None,
) -> dict:
    other_formats = FormatWriter(writer, formats, sources, vetting, max_age)
    manifest: dict = {"families": [], "rules": [], "rejected": len(rejects), "generated_from": list(sources)}
    manifest["vetting"] = {v: sum(1 for n in vetting if n.verdict == v) for v in ("drop", "flag")}
    rows = [vetting_row(note) for note in vetting]
    by_family: dict[str, tuple[list[VettingNote], list[str]]] = {}
    for note, row in zip(vetting, rows, strict=True):
        family_notes, family_rows = by_family.setdefault(note.ioc.malware, ([], []))
        family_notes.append(note)
        family_rows.append(row)
    if vetting:
        writer.write("vetting.md", render_vetting("all families", vetting, rows))
    del rows
    if allowlist is not None:
        writer.write(PACK_ALLOWLIST, allowlist)
        manifest["allowlist"] = PACK_ALLOWLIST
    arm = ArmBatcher()
    arm_entries: list[dict] = []

    def write_arm(batch: ArmBatch | None) -> None:
        if batch is None:
            return
        path = "sentinel-arm.json" if not arm_entries else f"sentinel-arm-{len(arm_entries) + 1}.json"
        writer.write(path, batch.text)
        arm_entries.append(
            {"id": path.removesuffix(".json"), "family": None, "kind": "analytic", "table": None, "variant": None,
             "platform": "sentinel", "ioc_types": list(batch.ioc_types), "path": path, "format": "arm"}
        )  # fmt: skip

    for plan in plans:
        family = plan.family
        family_notes, family_rows = by_family.get(family.malware, ([], []))
        manifest["rules"] += write_family(writer, plan, sources, family_notes)
        other_formats.add_family(plan)
        for rule in plan.analytics:
            write_arm(arm.add(rule))
        if family_notes:
            writer.write(f"{family.slug}/vetting.md", render_vetting(family.name, family_notes, family_rows))
        manifest["families"].append(
            {"name": family.name, "slug": family.slug, "malware": family.malware, "aliases": list(family.aliases),
             "malpedia": family.malpedia, "ioc_count": len(family.iocs),
             "ioc_types": family.ioc_types, "page": f"{family.slug}/README.md",
             "hunting_queries": len(plan.hunting), "analytics_rules": len(plan.analytics),
             "watchlists": [f"{family.slug}/watchlists/{w.alias}.csv" for w in plan.watchlists],
             "vetting": {v: sum(1 for n in family_notes if n.verdict == v) for v in ("drop", "flag")}}
        )  # fmt: skip
    write_arm(arm.finish())
    manifest["rules"] += arm_entries
    other_formats.finish(manifest)
    if rejects:
        writer.write(
            "rejected.csv",
            csv_text(
                ("file", "record", "reason", "value"),
                [(r.file, r.record, r.reason, r.value) for r in rejects],
            ),
        )
    writer.write("index.md", _index(manifest["families"], len(rejects), manifest["vetting"]))
    writer.write("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
