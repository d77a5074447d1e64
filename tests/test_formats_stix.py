"""STIX 2.1 output: the real dump's bundle parses with `stix2` (no custom content), holds one indicator per
kept IOC with a valid pattern and an `indicates` relationship to its family, and the Sentinel upload
batches hold the same objects, at most 100 each."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest
import stix2
import stix2.exceptions
from stix2patterns.validator import run_validator

from formats_helpers import AS_OF, DUMP_2022, kept_iocs, manifest_files, real_pack
from foxhunt.build import build
from foxhunt.model import IocType
from foxhunt.render.formats import FORMATS
from foxhunt.render.stix import TLP_CLEAR
from foxhunt.vetting import Vetter
from foxhunt.vetting.expiry import MaxAge

PATTERN_TYPES = {  # object path in the pattern -> IOC type
    "network-traffic:dst_port": "ip:port",
    "domain-name:value": "domain",
    "url:value": "url",
    "file:hashes.'SHA-256'": "sha256_hash",
}


def _bundle() -> tuple[stix2.Bundle, dict]:
    pack, _ = real_pack()
    (entry,) = manifest_files(pack, "stix")[:1]
    text = (pack / entry["path"]).read_text(encoding="utf-8")
    return stix2.parse(text, allow_custom=False), json.loads(text)


def _ioc_of(indicator: stix2.Indicator) -> tuple[str, str]:
    """(ioc_type, value) the indicator's pattern names, read back from the pattern."""
    pattern = indicator.pattern
    kind = next(t for path, t in PATTERN_TYPES.items() if path in pattern)
    values = [part.split("'")[1] for part in pattern.split(" = ")[1:] if part.startswith("'")]
    if kind == "ip:port":
        ip = values[-1]
        port = pattern.rsplit("dst_port = ", 1)[1].rstrip("]")
        return kind, f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    return kind, values[0]


def test_real_dump_bundle_parses_strictly_with_one_indicator_per_kept_ioc() -> None:
    bundle, raw = _bundle()
    pack, result = real_pack()
    types = Counter(obj.type for obj in bundle.objects)
    assert types["indicator"] == result.selected == 452
    assert types["relationship"] == 452 and types["malware"] == 20
    assert types["identity"] == 1 and types["marking-definition"] == 1
    indicators = [obj for obj in bundle.objects if obj.type == "indicator"]
    assert {_ioc_of(i) for i in indicators} == kept_iocs(pack)
    assert len({obj.id for obj in bundle.objects}) == len(bundle.objects)
    for indicator in indicators:
        assert run_validator(indicator.pattern, "2.1") == []
        assert indicator.object_marking_refs == [TLP_CLEAR.id]
        assert indicator.valid_from == indicator.created
        assert 0 <= indicator.confidence <= 100 and indicator.labels
    marking = next(obj for obj in raw["objects"] if obj["type"] == "marking-definition")
    assert marking["name"] == "TLP:CLEAR" and next(iter(marking["extensions"].values()))["tlp_2_0"] == "clear"


def test_relationships_link_each_indicator_to_its_family() -> None:
    bundle, _ = _bundle()
    by_id = {obj.id: obj for obj in bundle.objects}
    for relationship in (obj for obj in bundle.objects if obj.type == "relationship"):
        assert relationship.relationship_type == "indicates"
        source, target = by_id[relationship.source_ref], by_id[relationship.target_ref]
        assert source.type == "indicator" and target.type == "malware"
        assert source.name.startswith(target.name + " ")
    cobalt = next(obj for obj in bundle.objects if obj.type == "malware" and obj.name == "Cobalt Strike")
    assert set(cobalt.aliases) == {"Agentemis", "BEACON", "CobaltStrike"} and cobalt.is_family
    urls = {ref.source_name: ref.url for ref in cobalt.external_references}
    assert urls["Malpedia"].endswith("/win.cobalt_strike")
    assert urls["ThreatFox"] == "https://threatfox.abuse.ch/browse/malware/win.cobalt_strike/"


def test_ip_port_patterns_use_network_traffic_dst_port_and_valid_until_follows_the_expiry_policy() -> None:
    bundle, _ = _bundle()
    ages = MaxAge.defaults()
    indicators = [obj for obj in bundle.objects if obj.type == "indicator"]
    endpoint = next(i for i in indicators if i.name.endswith(" ip:port 101.35.198.64:80"))
    assert endpoint.pattern == (
        "[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = '101.35.198.64' "
        "AND network-traffic:dst_port = 80]"
    )
    for indicator in indicators:
        kind = _ioc_of(indicator)[0]
        age = ages.age(IocType(kind))
        if age is None:  # hashes never expire
            assert "valid_until" not in indicator
        else:
            assert indicator.valid_until == indicator.modified + timedelta(seconds=age.total_seconds())


def test_sentinel_upload_batches_hold_every_object_at_most_100_each() -> None:
    pack, _ = real_pack()
    _, raw = _bundle()
    batches = [e for e in manifest_files(pack, "stix") if e["kind"] == "sentinel-stix-upload"]
    objects = []
    for entry in batches:
        body = json.loads((pack / entry["path"]).read_text(encoding="utf-8"))
        assert set(body) == {"sourcesystem", "stixobjects"} and 0 < len(body["stixobjects"]) <= 100
        assert entry["count"] == len(body["stixobjects"])
        objects += body["stixobjects"]
    assert objects == raw["objects"]
    for obj in objects:
        stix2.parse(obj, allow_custom=False)


def test_every_format_is_byte_identical_across_builds(tmp_path) -> None:
    pack, _ = real_pack()
    again = tmp_path / "again"
    build([DUMP_2022], again, formats=FORMATS, vetter=Vetter(now=AS_OF))
    manifest = json.loads((pack / "manifest.json").read_text(encoding="utf-8"))
    assert {e["format"] for e in manifest["files"]} == set(FORMATS) - {"sentinel"}
    assert (again / "manifest.json").read_bytes() == (pack / "manifest.json").read_bytes()
    for entry in manifest["files"]:
        assert (again / entry["path"]).read_bytes() == (pack / entry["path"]).read_bytes(), entry["path"]


def test_a_broken_pattern_is_still_refused_after_its_shape_was_seen() -> None:
    from foxhunt.render.stix import _Indicator

    good = {"pattern_type": "stix", "valid_from": "2022-01-01T00:00:00Z"}
    _Indicator(pattern="[domain-name:value = 'a.example.com']", **good)
    with pytest.raises(stix2.exceptions.InvalidValueError):
        _Indicator(pattern="[domain-name:value = 'a.example.com' AND]", **good)
    with pytest.raises(stix2.exceptions.InvalidValueError):
        _Indicator(pattern="[file:hashes.MD5 = 'not-hex']", **good)
