"""One STIX 2.1 bundle per pack (built with the `stix2` library), and the same objects in batches for
Microsoft Sentinel's STIX objects upload API (at most 100 objects per request).

Objects: the foxhunt identity, the TLP:CLEAR marking (TLP 2.0), one malware object per family (aliases,
Malpedia and ThreatFox references), one indicator per IOC and an `indicates` relationship from each
indicator to its family. Ids are UUIDv5 of the content (`stable_id`) and every time comes from the data
(first/last seen), so the same IOCs give a byte-identical bundle.

Patterns: ip:port ``[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = '…'
AND network-traffic:dst_port = N]`` (ipv6-addr for IPv6); domain ``[domain-name:value = '…']`` (STIX
equality: subdomain matching is the consumer's); url ``[url:value = '…']``; hashes
``[file:hashes.MD5 = '…']``, ``'SHA-1'``, ``'SHA-256'``. valid_until is last seen plus the expiry policy's
maximum age for the IOC type (none for types that never expire).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime

import stix2
import stix2.exceptions
from stix2patterns.validator import run_validator

from foxhunt.matching.semantics import ip_of
from foxhunt.model import Ioc, IocType
from foxhunt.normalize import split_ip_port
from foxhunt.render.outputs import (
    FIXED_TIME,
    FormatContext,
    OutputFile,
    Written,
    chunked,
    threatfox_ioc_url,
    threatfox_malware_url,
    utc,
)
from foxhunt.rules.families import Family
from foxhunt.rules.planner import stable_id

FORMAT = "stix"
UPLOAD_BATCH = 100  # objects per request of Sentinel's STIX objects upload API
SOURCE_SYSTEM = "foxhunt"
TLP_CLEAR = stix2.MarkingDefinition(
    id="marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",  # the TLP 2.0 CLEAR marking (FIRST / OASIS)
    created="2022-10-01T00:00:00.000Z",
    name="TLP:CLEAR",
    extensions={
        "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d": {
            "extension_type": "property-extension",
            "tlp_2_0": "clear",
        }
    },
)
IDENTITY = stix2.Identity(
    id=f"identity--{stable_id('stix', 'identity', 'foxhunt')}",
    created=FIXED_TIME,
    modified=FIXED_TIME,
    name="foxhunt",
    identity_class="system",
    description="foxhunt rule packs, built from abuse.ch ThreatFox data (CC0).",
)
HASH_PATHS = {IocType.MD5: "MD5", IocType.SHA1: "'SHA-1'", IocType.SHA256: "'SHA-256'"}
COMMON = {"created_by_ref": IDENTITY.id, "object_marking_refs": [TLP_CLEAR.id]}


def _literal(value: str) -> str:
    """A STIX pattern string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pattern(ioc: Ioc) -> str:
    """The STIX pattern of one IOC."""
    if ioc.ioc_type is IocType.IP_PORT:
        ip = ip_of(ioc)
        kind = "ipv6-addr" if ":" in ip else "ipv4-addr"
        port = split_ip_port(ioc.value)[1]
        return (
            f"[network-traffic:dst_ref.type = '{kind}' AND network-traffic:dst_ref.value = {_literal(ip)} "
            f"AND network-traffic:dst_port = {port}]"
        )
    if ioc.ioc_type is IocType.DOMAIN:
        return f"[domain-name:value = {_literal(ioc.value)}]"
    if ioc.ioc_type is IocType.URL:
        return f"[url:value = {_literal(ioc.value)}]"
    return f"[file:hashes.{HASH_PATHS[ioc.ioc_type]} = {_literal(ioc.value)}]"


_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|(?<![\w-])\d+\b")
_VALID_SHAPES: set[str] = set()  # patterns with their literals blanked out, seen valid


class _Indicator(stix2.Indicator):
    """stix2's Indicator with its pattern parsed once per shape (the pattern with its literals blanked
    out) instead of anew per object (~3 ms each, an hour for a full dump). foxhunt's patterns come from
    `pattern` alone, with normalised values escaped by `_literal`; the tests parse every pattern of the
    bundles they build with stix2 itself."""

    def _check_object_constraints(self) -> None:
        super(stix2.Indicator, self)._check_object_constraints()  # what every STIX object checks
        if self.get("valid_until") and self.valid_until <= self.valid_from:
            raise ValueError(f"{self.id} 'valid_until' must be greater than 'valid_from'")
        shape = _LITERAL.sub("_", self.pattern)
        if shape in _VALID_SHAPES:
            return
        errors = run_validator(self.pattern, "2.1")
        if errors:
            raise stix2.exceptions.InvalidValueError(self.__class__, "pattern", errors[0])
        _VALID_SHAPES.add(shape)


def _times(ioc: Ioc) -> tuple[datetime, datetime]:
    """(created, modified) of an IOC's objects: first seen and last seen (modified never earlier)."""
    created = utc(ioc.first_seen or ioc.last_seen) or FIXED_TIME
    modified = utc(ioc.seen) or created
    return created, max(created, modified)


def _malware(family: Family) -> stix2.Malware:
    times = [_times(ioc) for ioc in family.iocs]
    references = [{"source_name": "ThreatFox", "url": threatfox_malware_url(family.malware)}]
    if family.malpedia:
        references.insert(0, {"source_name": "Malpedia", "url": family.malpedia})
    return stix2.Malware(
        id=f"malware--{stable_id('stix', 'malware', family.malware)}",
        created=min(t[0] for t in times),
        modified=max(t[1] for t in times),
        name=family.name,
        is_family=True,
        aliases=list(family.aliases) or None,
        description=f"{family.name} (ThreatFox malware id {family.malware}).",
        external_references=references,
        **COMMON,
    )


def _indicator(ioc: Ioc, family: Family, ctx: FormatContext) -> stix2.Indicator:
    created, modified = _times(ioc)
    valid_until = ctx.expires(ioc)
    references = []
    if (url := threatfox_ioc_url(ioc)) is not None:
        references.append({"source_name": "ThreatFox", "url": url, "external_id": ioc.threatfox_id})
    if ioc.reference:
        references.append({"source_name": "ThreatFox reference", "url": ioc.reference})
    labels = sorted({ioc.threat_type, *(tag for tag in ioc.tags if tag)})
    return _Indicator(
        id=f"indicator--{stable_id('stix', 'indicator', ioc.ioc_type.value, ioc.value)}",
        created=created,
        modified=modified,
        name=f"{family.name} {ioc.ioc_type.value} {ioc.value}",
        description=(
            f"abuse.ch ThreatFox {ioc.ioc_type.value} IOC of {family.name}, threat type {ioc.threat_type}"
            + (f", reported by {ioc.reporter}" if ioc.reporter else "")
            + "."
        ),
        indicator_types=["malicious-activity"],
        pattern=pattern(ioc),
        pattern_type="stix",
        valid_from=created,
        valid_until=valid_until if valid_until is not None and valid_until > created else None,
        confidence=ioc.confidence,
        labels=labels or None,
        external_references=references or None,
        **COMMON,
    )


def _relationship(indicator: stix2.Indicator, malware: stix2.Malware) -> stix2.Relationship:
    return stix2.Relationship(
        id=f"relationship--{stable_id('stix', 'indicates', indicator.id, malware.id)}",
        created=indicator.created,
        modified=indicator.modified,
        relationship_type="indicates",
        source_ref=indicator.id,
        target_ref=malware.id,
        **COMMON,
    )


def build_bundle(families: Sequence[Family], ctx: FormatContext) -> stix2.Bundle:
    """The pack's bundle: identity, marking, then per family its malware, indicators and relationships."""
    objects: list = [IDENTITY, TLP_CLEAR]
    for family in families:
        malware = _malware(family)
        objects.append(malware)
        for ioc in sorted(family.iocs, key=lambda i: (i.ioc_type.value, i.value)):
            indicator = _indicator(ioc, family, ctx)
            objects += [indicator, _relationship(indicator, malware)]
    bundle_id = stable_id("stix", "bundle", *(obj.id for obj in objects))
    return stix2.Bundle(objects=objects, id=f"bundle--{bundle_id}")


def write_pack(families: Sequence[Family], ctx: FormatContext) -> Written:
    """`stix/foxhunt-bundle.json` and `stix/sentinel-upload-NNN.json` (<= 100 objects each)."""
    bundle = build_bundle(families, ctx)
    # each object in STIX property order (stix2's pretty form); the bundle's own pretty serialisation
    # is quadratic in its size, so the bundle is assembled from the objects
    objects = [json.loads(obj.serialize(pretty=True)) for obj in bundle.objects]
    document = {"type": "bundle", "id": bundle.id, "objects": objects}
    indicators = sum(1 for obj in objects if obj["type"] == "indicator")
    text = json.dumps(document, indent=4, ensure_ascii=False) + "\n"
    written = Written([OutputFile("stix/foxhunt-bundle.json", text, FORMAT, "stix-bundle", None, indicators)])
    for number, batch in enumerate(chunked(objects, UPLOAD_BATCH), 1):
        body = {"sourcesystem": SOURCE_SYSTEM, "stixobjects": batch}
        written.files.append(
            OutputFile(
                f"stix/sentinel-upload-{number:03d}.json",
                json.dumps(body, indent=2, ensure_ascii=False) + "\n",
                FORMAT,
                "sentinel-stix-upload",
                None,
                len(batch),
            )
        )
    return written
