"""Plain DNS block lists of the pack's domain IOCs: a hosts file and a DNS RPZ zone.

- `dns/hosts`: ``0.0.0.0 <domain>`` lines. A hosts file matches exact names only, so subdomains are not
  covered (a documented gap against the domain semantics); use the RPZ zone for those.
- `dns/foxhunt.rpz`: a Response Policy Zone (BIND, Unbound, PowerDNS Recursor, Knot Resolver) that answers
  NXDOMAIN (``CNAME .``) for each domain and ``*.domain``: the name and every subdomain, exactly the domain
  semantics. Names are relative, so the zone can be loaded under any name (e.g. ``rpz.foxhunt``); the
  serial is the newest IOC time (Unix seconds), so a newer feed gives a higher serial.

Only domain IOCs go in: a URL IOC's host or an ip:port IOC would block far more than the IOC. A domain
whose wildcard owner name under the documented zone name (``*.<domain>.rpz.foxhunt.``) would pass DNS's
255-octet limit is left out of the zone, with a warning: BIND refuses the whole zone over one such name.
"""

from __future__ import annotations

from collections.abc import Sequence

from foxhunt.model import IocType
from foxhunt.render.outputs import FormatContext, OutputFile, Written, utc
from foxhunt.rules.families import Family

HOSTFILE, RPZ = "hostfile", "rpz"
SINK = "0.0.0.0"
RPZ_TTL = 300
RPZ_ORIGIN = "rpz.foxhunt"  # the zone name the README documents
MAX_NAME_OCTETS = 255  # a domain name in wire format (RFC 1035 2.3.4)


def _wire_octets(name: str) -> int:
    """Octets of the absolute name in DNS wire format: a length byte per label, the labels, the root byte."""
    return sum(1 + len(label.encode("ascii", "replace")) for label in name.strip(".").split(".")) + 1


def _fits_rpz(name: str) -> bool:
    return _wire_octets(f"*.{name}.{RPZ_ORIGIN}") <= MAX_NAME_OCTETS


def _comment(text: str) -> str:
    """Text safe on one comment line (a family name could hold a line break)."""
    return " ".join(text.split())


def _domains(families: Sequence[Family]) -> list[tuple[Family, list[str]]]:
    pairs = []
    for family in families:
        names = sorted({ioc.value for ioc in family.iocs if ioc.ioc_type is IocType.DOMAIN})
        if names:
            pairs.append((family, names))
    return pairs


def _header(title: str, count: int, ctx: FormatContext) -> list[str]:
    sources = _comment(", ".join(ctx.sources)) or "-"
    return [f"{title}: {count} domains from abuse.ch ThreatFox (CC0), built by foxhunt from {sources}"]


def render_hostfile(families: Sequence[Family], ctx: FormatContext) -> tuple[str, int]:
    pairs = _domains(families)
    count = sum(len(names) for _, names in pairs)
    lines = [f"# {line}" for line in _header("foxhunt hosts file", count, ctx)]
    lines.append("# Exact names only: a hosts file cannot cover subdomains (the RPZ zone does).")
    for family, names in pairs:
        lines += [
            "",
            f"# {_comment(family.name)} ({_comment(family.malware)})",
            *(f"{SINK} {n}" for n in names),
        ]
    return "\n".join(lines) + "\n", count


def rpz_skipped(families: Sequence[Family]) -> list[str]:
    """The domains too long for the zone under its documented name."""
    return [name for _, names in _domains(families) for name in names if not _fits_rpz(name)]


def render_rpz(families: Sequence[Family], ctx: FormatContext) -> tuple[str, int]:
    pairs = [(family, [n for n in names if _fits_rpz(n)]) for family, names in _domains(families)]
    pairs = [(family, names) for family, names in pairs if names]
    count = sum(len(names) for _, names in pairs)
    seen = [utc(ioc.seen) for family, _ in pairs for ioc in family.iocs if ioc.seen]
    serial = int(max(seen).timestamp()) if seen else 1  # type: ignore[type-var,union-attr]
    lines = [f"; {line}" for line in _header("foxhunt RPZ", count, ctx)]
    lines += [
        "; Each domain and its subdomains answer NXDOMAIN (CNAME .).",
        f"$TTL {RPZ_TTL}",
        f"@ IN SOA localhost. hostmaster.localhost. ( {serial} 3600 600 604800 {RPZ_TTL} )",
        "@ IN NS localhost.",
    ]
    for family, names in pairs:
        lines += ["", f"; {_comment(family.name)} ({_comment(family.malware)})"]
        for name in names:
            lines += [f"{name} CNAME .", f"*.{name} CNAME ."]
    return "\n".join(lines) + "\n", count


def write_hostfile(families: Sequence[Family], ctx: FormatContext) -> Written:
    text, count = render_hostfile(families, ctx)
    return Written([OutputFile("dns/hosts", text, HOSTFILE, "hosts-file", None, count)])


def write_rpz(families: Sequence[Family], ctx: FormatContext) -> Written:
    text, count = render_rpz(families, ctx)
    warnings = [
        f"rpz: {name[:60]}... ({len(name)} characters) left out of the zone: *.{{name}}.{RPZ_ORIGIN}. would pass "
        f"DNS's {MAX_NAME_OCTETS}-octet name limit, and BIND would refuse the whole zone"
        for name in rpz_skipped(families)
    ]
    return Written([OutputFile("dns/foxhunt.rpz", text, RPZ, "rpz-zone", None, count)], warnings)
