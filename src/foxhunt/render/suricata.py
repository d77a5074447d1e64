"""Suricata rules for the pack's network IOCs (`suricata/foxhunt.rules`).

The matching semantics in Suricata's terms:

- ip:port: ``alert ip $HOME_NET any -> IP PORT``: the IP and the port together;
- domain: ``dns.query``, ``tls.sni`` and ``http.host`` each with ``dotprefix; content:".ioc"; endswith;``:
  the name or any subdomain, never a substring (DNS and SNI with ``nocase``; ``http.host`` is already
  lower-case);
- url (http only: an https URL is not visible to HTTP inspection, and its host alone would match far more
  than the URL): the host (``http.host``, exact), the port in the header, and the raw request URI equal to
  the IOC's path and query; a URL without a query gets a second rule for the path followed by ``?``;
- hashes are not network indicators and get no rule.

Sids: 1,500,000-1,999,999, inside the 1,000,000-1,999,999 range kept for local rules (Emerging Threats
uses 2,000,000 and up). Each rule's sid is derived from its IOC and kind (UUIDv5 modulo the range's size);
a collision takes the next free sid, allocating in sorted key order, so the same IOCs always get the same
sids and a new IOC moves at most the sids it collides with. rev is 1.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from foxhunt.matching.semantics import ip_of
from foxhunt.matching.variants import DOMAIN, IP_PORT, URL
from foxhunt.model import Ioc, IocType
from foxhunt.normalize import DEFAULT_PORTS, split_ip_port
from foxhunt.render.outputs import (
    FormatContext,
    OutputFile,
    Written,
    tactic,
    threatfox_malware_url,
    utc,
)
from foxhunt.rules.families import Family
from foxhunt.rules.planner import FOXHUNT_NAMESPACE, severity

FORMAT = "suricata"
SID_BASE = 1_500_000
SID_SPAN = 500_000  # sids SID_BASE .. SID_BASE + SID_SPAN - 1
TACTIC_IDS = {"CommandAndControl": "TA0011", "Execution": "TA0002"}
SIGNATURE_SEVERITY = {
    "High": "Major",
    "Medium": "Minor",
    "Low": "Informational",
    "Informational": "Informational",
}
_LITERAL = re.compile(r"[\x21\x23-\x3a\x3c-\x5b\x5d-\x7b\x7d\x7e]")  # printable ASCII but space " ; \ |
_META_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_MSG_UNSAFE = re.compile(r'[";\\\x00-\x1f\x7f-\x9f\u2028\u2029]+')  # ", ;, \, control characters, line breaks
MAX_LINE = 8_192  # Suricata refuses a longer rule line, and with it the whole file
# Suricata 7 with Hyperscan fails to compile (and refuses the whole file over) a longer content pattern
MAX_CONTENT = 4_000
MSG_VALUE_MAX = 200  # characters of the IOC value shown in msg; longer ones end with "..."


class SidRangeFull(ValueError):
    """More rules than the sid range holds."""


@dataclass(frozen=True, slots=True)
class Rule:
    key: str  # what the sid is derived from: IOC type, value and rule kind
    header: str
    msg: str
    body: tuple[str, ...]  # detection options, each without its trailing ";"
    reference: str
    metadata: str


def content(text: str) -> str:
    """A content string: printable ASCII as is, everything else (and space, ", ;, \\, |) as |hex|."""
    out: list[str] = []
    hex_run: list[str] = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if _LITERAL.fullmatch(char):
            if hex_run:
                out.append("|" + " ".join(hex_run) + "|")
                hex_run = []
            out.append(char)
        else:
            hex_run.append(f"{byte:02x}")
    if hex_run:
        out.append("|" + " ".join(hex_run) + "|")
    return '"' + "".join(out) + '"'


def _msg_text(text: str, limit: int | None = None) -> str:
    """Feed text safe inside ``msg:"..."`` and on a comment line: one line, no ``"``, ``;`` or ``\\`` (each
    run of them a space), cut to `limit` characters with "..."."""
    clean = " ".join(_MSG_UNSAFE.sub(" ", text).split())
    return clean if limit is None or len(clean) <= limit else clean[: limit - 3] + "..."


def _meta(value: str) -> str:
    return _META_UNSAFE.sub("_", value).strip("_") or "unknown"


def _date(ioc_time) -> str:
    return utc(ioc_time).strftime("%Y_%m_%d")


def _metadata(ioc: Ioc, family: Family, level: str) -> str:
    tactic_name, technique = tactic(ioc)
    confidence = ioc.confidence if ioc.confidence is not None else 50
    pairs = [
        "affected_product Any",
        "attack_target Client_Endpoint",
        f"confidence {'High' if confidence >= 90 else 'Medium' if confidence >= 50 else 'Low'}",
    ]
    if ioc.first_seen or ioc.last_seen:
        pairs.append(f"created_at {_date(ioc.first_seen or ioc.last_seen)}")
    pairs += [
        "deployment Perimeter",
        f"malware_family {_meta(family.name)}",
        f"mitre_tactic_id {TACTIC_IDS[tactic_name]}",
        f"mitre_technique_id {technique}",
        "performance_impact Low",
        f"signature_severity {SIGNATURE_SEVERITY[level]}",
    ]
    if ioc.seen:
        pairs.append(f"updated_at {_date(ioc.seen)}")
    return ", ".join(pairs)


def _reference(ioc: Ioc, family: Family) -> str:
    """The ThreatFox page of the IOC (a numeric id only), else of its malware (percent-encoded): either way
    only URL-safe characters, nothing that could end the option or the rule."""
    if ioc.threatfox_id and str(ioc.threatfox_id).isascii() and str(ioc.threatfox_id).isdigit():
        url = f"threatfox.abuse.ch/ioc/{ioc.threatfox_id}/"
    else:
        url = threatfox_malware_url(quote(family.malware, safe="._-~"))
    return "url," + url.removeprefix("https://")


def _ioc_rules(ioc: Ioc, family: Family, ctx: FormatContext) -> list[Rule]:
    """The rules of one IOC (none for hashes and non-http URLs)."""
    # names written "evil .com" in msg (the Emerging Threats convention): the rule text leaks no lookup-able name
    shown = ioc.value if ioc.ioc_type is IocType.IP_PORT else ioc.value.replace(".", " .")
    base = _msg_text(
        f"FOXHUNT MALWARE {_msg_text(family.name, 100)} {_msg_text(ioc.threat_type, 50)} {ioc.ioc_type.value} "
        f"{_msg_text(shown, MSG_VALUE_MAX)}"
    )
    reference = _reference(ioc, family)
    key = f"{ioc.ioc_type.value}|{ioc.value}"
    if ioc.ioc_type is IocType.IP_PORT:
        ip, port = ip_of(ioc), split_ip_port(ioc.value)[1]
        metadata = _metadata(ioc, family, severity(IP_PORT, [ioc], ctx.flagged))
        return [
            Rule(
                f"{key}|ip",
                f"alert ip $HOME_NET any -> [{ip}] {port}",
                base,
                ("target:dest_ip",),
                reference,
                metadata,
            )
        ]
    if ioc.ioc_type is IocType.DOMAIN:
        metadata = _metadata(ioc, family, severity(DOMAIN, [ioc], ctx.flagged))
        suffix = content("." + ioc.value)
        established = "flow:established,to_server"
        return [
            Rule(f"{key}|dns", "alert dns $HOME_NET any -> any any", f"{base} (DNS query)",
                 ("dns.query", "dotprefix", f"content:{suffix}", "endswith", "nocase"), reference, metadata),
            Rule(f"{key}|tls", "alert tls $HOME_NET any -> any any", f"{base} (TLS SNI)",
                 (established, "tls.sni", "dotprefix", f"content:{suffix}", "endswith", "nocase"), reference, metadata),
            Rule(f"{key}|http", "alert http $HOME_NET any -> any any", f"{base} (HTTP host)",
                 (established, "http.host", "dotprefix", f"content:{suffix}", "endswith"), reference, metadata),
        ]  # fmt: skip
    if ioc.ioc_type is IocType.URL:
        parts = urlsplit(ioc.value)
        if parts.scheme != "http":
            return []
        metadata = _metadata(ioc, family, severity(URL, [ioc], ctx.flagged))
        port = parts.port or DEFAULT_PORTS["http"]
        header = f"alert http $HOME_NET any -> any {port}"
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        host = ("http.host", f"content:{content(parts.hostname or '')}", "startswith", "endswith")
        established = ("flow:established,to_server",)
        rules = [
            Rule(f"{key}|url", header, f"{base} (HTTP request)",
                 (*established, *host, "http.uri.raw", f"content:{content(target)}", "startswith", "endswith"),
                 reference, metadata),
        ]  # fmt: skip
        if not parts.query:
            rules.append(
                Rule(f"{key}|url-query", header, f"{base} (HTTP request with a query)",
                     (*established, *host, "http.uri.raw", f"content:{content(target + '?')}", "startswith"),
                     reference, metadata)
            )  # fmt: skip
        return rules
    return []


def allocate_sids(keys: Sequence[str]) -> dict[str, int]:
    """A sid per key in [SID_BASE, SID_BASE + SID_SPAN): UUIDv5 of the key modulo the span, the next free
    one on a collision, keys taken in sorted order."""
    if len(set(keys)) > SID_SPAN:
        raise SidRangeFull(f"{len(set(keys)):,} Suricata rules do not fit the {SID_SPAN:,} sids of the range")
    taken: set[int] = set()
    sids: dict[str, int] = {}
    for key in sorted(set(keys)):
        slot = uuid.uuid5(FOXHUNT_NAMESPACE, f"suricata|{key}").int % SID_SPAN
        while slot in taken:
            slot = (slot + 1) % SID_SPAN
        taken.add(slot)
        sids[key] = SID_BASE + slot
    return sids


def render(rule: Rule, sid: int) -> str:
    options = [f'msg:"{rule.msg}"', *rule.body, f"reference:{rule.reference}", "classtype:trojan-activity",
               f"sid:{sid}", "rev:1", f"metadata:{rule.metadata}"]  # fmt: skip
    return f"{rule.header} ({'; '.join(options)};)"


def pack_rules(families: Sequence[Family], ctx: FormatContext) -> list[tuple[Family, list[Rule]]]:
    """The rules of every family, IOCs by type then value."""
    grouped = []
    for family in families:
        rules = [
            rule
            for ioc in sorted(family.iocs, key=lambda i: (i.ioc_type.value, i.value))
            for rule in _ioc_rules(ioc, family, ctx)
        ]
        grouped.append((family, rules))
    return grouped


def _content_bytes(option: str) -> int:
    """How many bytes a ``content:"..."`` option matches (literal characters, |hex| bytes)."""
    parts = option.removeprefix('content:"').removesuffix('"').split("|")
    return sum(len(part) if n % 2 == 0 else len(part.split()) for n, part in enumerate(parts))


def _fits(rule: Rule) -> bool:
    """Whether Suricata loads the rule: its line under the line limit (every sid has the range's 7 digits),
    each content under the pattern limit."""
    return len(render(rule, SID_BASE + SID_SPAN - 1).encode("utf-8")) < MAX_LINE and all(
        _content_bytes(option) <= MAX_CONTENT for option in rule.body if option.startswith("content:")
    )


def write_pack(families: Sequence[Family], ctx: FormatContext) -> Written:
    grouped = pack_rules(families, ctx)
    too_long = dict.fromkeys(
        rule.key.rsplit("|", 1)[0] for _, rules in grouped for rule in rules if not _fits(rule)
    )
    warnings = [
        f"suricata: no rule for the {key.split('|', 1)[0]} IOC {key.split('|', 1)[1][:100]}... "
        f"({len(key.split('|', 1)[1]):,} characters): Suricata would refuse its rule, and with it the whole file, "
        f"past {MAX_LINE:,} characters a line or {MAX_CONTENT:,} bytes a content pattern"
        for key in too_long
    ]
    grouped = [(family, [rule for rule in rules if _fits(rule)]) for family, rules in grouped]
    sids = allocate_sids([rule.key for _, rules in grouped for rule in rules])
    lines = [
        "# foxhunt Suricata rules from abuse.ch ThreatFox (CC0). Sids 1500000-1999999 (local range).",
        "# Hashes and https URLs have no rule here; see the foxhunt README (Other formats).",
    ]
    for family, rules in grouped:
        if rules:
            lines += ["", f"# {_msg_text(family.name)} ({_msg_text(family.malware)})"]
            lines += [render(rule, sids[rule.key]) for rule in rules]
    return Written(
        [
            OutputFile(
                "suricata/foxhunt.rules", "\n".join(lines) + "\n", FORMAT, "suricata-rules", None, len(sids)
            )
        ],
        warnings,
    )
