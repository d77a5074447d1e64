"""Deterministic log exports and ThreatFox feeds for the `foxhunt hunt` benchmark.

    python bench/hunt/make_logs.py dns --records 2000000 --iocs 250000 --out bench/hunt/out/dns-2000000
    python bench/hunt/make_logs.py csl --records 2000000 --iocs 100000 --out bench/hunt/out/csl-2000000

Writes, streamed, into --out: `feed.json` (ThreatFox API answer), `values.txt` (the IOC values, one a
line, for grep -F -f), `log.csv` and `expected.json` (the planted records and the hits a correct hunt
reports with --max-age none). `dns`: a DnsEvents Log Analytics portal export against domain IOCs;
`csl`: a CommonSecurityLog export against ip:port IOCs. One record in every 2000 (0.05%) is planted:
subdomains and exact names of IOC domains; exact ip:port, ip-only (the IOC's IP on another port) and
inbound (source side) endpoints, only of IOCs that foxhunt's warninglist vetting keeps. The feed
depends only on --seed and --iocs, so logs of any size share it and a smaller log is a prefix of a
larger one; background values cannot match (host labels carry digits, IOC labels never; IPs are drawn
disjoint from the IOCs').
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from foxhunt.feeds import read_feeds
from foxhunt.vetting import MaxAge, Vetter, load_policy

PLANT_EVERY = 2000  # record n is planted when n % PLANT_EVERY == PLANT_EVERY // 2: 0.05%
START = datetime(2026, 12, 1, tzinfo=UTC)
STEP = timedelta(milliseconds=37)
FAMILIES = [
    ("win.cobalt_strike", "Cobalt Strike"), ("win.qakbot", "QakBot"), ("win.asyncrat", "AsyncRAT"),
    ("win.remcos", "Remcos"), ("win.agent_tesla", "Agent Tesla"), ("elf.mirai", "Mirai"),
    ("win.lumma", "Lumma Stealer"), ("win.redline_stealer", "RedLine Stealer"), ("js.socgholish", "SocGholish"),
    ("win.njrat", "NjRAT"), ("apk.hydra", "Hydra"), ("win.dcrat", "DCRat"), ("win.sliver", "Sliver"),
]  # fmt: skip
TLDS = ["com", "net", "org", "ru", "xyz", "top", "info", "biz", "online", "site", "shop", "io", "cn"]
DYNAMIC = ["duckdns.org", "ddns.net", "no-ip.biz", "hopto.org", "serveftp.com", "workers.dev"]
C2_PORTS = [443, 80, 8080, 4444, 8443, 2222, 1337, 7443, 9999, 5555, 3333, 6606, 7707, 8808, 1604]
LOG_PORTS = [443, 443, 443, 80, 80, 53, 8080, 22, 993, 3389, 445, 123, 8443]
DNS_HEADER = ["TimeGenerated [UTC]", "Computer", "ClientIP", "Name", "QueryType", "IPAddresses"]
CSL_HEADER = [
    "TimeGenerated", "DeviceVendor", "DeviceProduct", "SourceIP", "SourcePort", "DestinationIP",
    "DestinationPort", "DestinationHostName", "RequestURL", "DeviceAction",
]  # fmt: skip
DEVICES = [("Palo Alto Networks", "PAN-OS"), ("Fortinet", "Fortigate"), ("Zscaler", "NSSWeblog"),
           ("Check Point", "VPN-1 & FireWall-1")]  # fmt: skip
WORDS = ["cdn", "api", "static", "img", "mail", "login", "auth", "edge", "tele", "sync", "update", "media"]


def _letters(rng: random.Random, low: int, high: int) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(low, high)))


def _public_ip(rng: random.Random) -> str:
    while True:
        first = rng.randint(1, 223)
        if first not in (10, 100, 127, 169, 172, 192):
            return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _internal_ip(rng: random.Random) -> str:
    return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def domain_iocs(rng: random.Random, count: int) -> list[str]:
    """Letters-only labels; 2 to 5 labels (70/24/5/1%), some under dynamic-DNS zones."""
    names: set[str] = set()
    while len(names) < count:
        roll = rng.random()
        if roll < 0.70:
            name = f"{_letters(rng, 7, 14)}.{rng.choice(TLDS)}"
        elif roll < 0.94:
            name = f"{_letters(rng, 6, 12)}.{rng.choice(DYNAMIC)}"
        elif roll < 0.99:
            name = f"{_letters(rng, 3, 8)}.{_letters(rng, 5, 10)}.{rng.choice(DYNAMIC)}"
        else:
            name = f"{_letters(rng, 3, 6)}.{_letters(rng, 3, 6)}.{_letters(rng, 5, 9)}.{rng.choice(TLDS)}"
        names.add(name)
    ordered = sorted(names)  # not the set's order: that changes with PYTHONHASHSEED
    rng.shuffle(ordered)
    return ordered


def endpoint_iocs(rng: random.Random, count: int) -> list[str]:
    """Public IPv4 ip:port; one IP in ten has a second port."""
    values: list[str] = []
    ips: set[str] = set()
    while len(values) < count:
        ip = _public_ip(rng)
        if ip in ips:
            continue
        ips.add(ip)
        ports = (
            rng.sample(C2_PORTS, 2)
            if rng.random() < 0.1
            else [rng.choice([*C2_PORTS, rng.randint(1024, 65535)])]
        )
        values += [f"{ip}:{port}" for port in ports]
    return values[:count]


def write_feed(path: Path, values: list[str], ioc_type: str, rng: random.Random) -> None:
    """A ThreatFox API answer (the bare `data` list), written record by record."""
    with path.open("w", encoding="utf-8") as out:
        out.write("[\n")
        for n, value in enumerate(values):
            malware, printable = rng.choice(FAMILIES)
            seen = START - timedelta(seconds=rng.randint(3600, 90 * 86400))
            record = {
                "id": str(1_400_000 + n), "ioc": value, "ioc_type": ioc_type, "threat_type": "botnet_cc",
                "malware": malware, "malware_printable": printable, "confidence_level": rng.choice([50, 75, 100]),
                "first_seen": seen.strftime("%Y-%m-%d %H:%M:%S UTC"),
            }  # fmt: skip
            out.write(("," if n else "") + json.dumps(record) + "\n")
        out.write("]\n")


def kept_by_vetting(feed: Path, values: list[str]) -> list[str]:
    """The `values` that `foxhunt hunt --max-age none` keeps: its default vetting drops a few (special-use
    IPs, public DNS resolvers); only those kept are planted."""
    vetter = Vetter(load_policy(None), None, MaxAge.defaults().with_specs(["none"]))
    kept = {ioc.value for ioc in vetter.vet_all(read_feeds([feed]).iocs).kept}
    return [v for v in values if v in kept]


def _portal_time(moment: datetime) -> str:
    hour = moment.hour % 12 or 12
    return (f"{moment.month}/{moment.day}/{moment.year}, {hour}:{moment:%M:%S}."
            f"{moment.microsecond // 1000:03d} {'AM' if moment.hour < 12 else 'PM'}")  # fmt: skip


Row = list[str]
Planter = Callable[[random.Random, Row], int]  # rewrites a background row into a planted one -> its hits


def dns_rows(rng: random.Random, iocs: list[str], kept: list[str]) -> tuple[Callable[[int], Row], Planter]:
    bases = [f"{rng.choice(WORDS)}{n}-{_letters(rng, 3, 9)}.{rng.choice(TLDS)}" for n in range(20_000)]
    bases += [f"h{n}x.{zone}" for n, zone in enumerate(DYNAMIC * 300)]  # dynamic-DNS names, not IOCs
    prefixes = ["www", "api", "img", "static", "login", "mail", "cdn", "e1", "e2", "s3", "edge-7", "m"]
    servers = [f"DNS{n:02d}.corp.contoso.com" for n in range(1, 13)]
    clients = [_internal_ip(rng) for _ in range(5000)]
    qtypes = ["A"] * 6 + ["AAAA"] * 2 + ["CNAME", "MX", "TXT", "PTR"]

    def row(n: int) -> Row:
        qtype = rng.choice(qtypes)
        base = bases[int(len(bases) * rng.random() ** 3)]  # skewed: a few names are very popular
        name = base if rng.random() < 0.3 else f"{rng.choice(prefixes)}.{base}"
        answer = "" if qtype != "A" else ",".join(_public_ip(rng) for _ in range(rng.choice((1, 1, 1, 2))))
        moment = START + STEP * n
        return [_portal_time(moment), rng.choice(servers), rng.choice(clients), name, qtype, answer]

    def plant(rng: random.Random, row: Row) -> int:
        ioc, roll = rng.choice(kept), rng.random()
        if roll < 0.75:
            extra = "" if rng.random() < 0.7 else f"{rng.choice(prefixes)}."
            row[3] = f"{extra}{rng.choice(prefixes)}{rng.randint(0, 99)}.{ioc}"
        elif roll < 0.95:
            row[3] = ioc
        else:
            row[3] = ioc.upper() + "."  # the hunt lower-cases and drops one trailing dot
        return 1

    return row, plant


def csl_rows(rng: random.Random, iocs: list[str], kept: list[str]) -> tuple[Callable[[int], Row], Planter]:
    ports_of: dict[str, set[str]] = {}
    for value in iocs:
        ip, port = value.rsplit(":", 1)
        ports_of.setdefault(ip, set()).add(port)
    destinations: list[str] = []
    while len(destinations) < 50_000:
        ip = _public_ip(rng)
        if ip not in ports_of:
            destinations.append(ip)
    sources = [_internal_ip(rng) for _ in range(5000)]
    kept_set = set(kept)
    hosts = [f"{rng.choice(WORDS)}{n}-{_letters(rng, 3, 9)}.{rng.choice(TLDS)}" for n in range(20_000)]

    def row(n: int) -> Row:
        vendor, product = rng.choice(DEVICES)
        port = rng.choice(LOG_PORTS)
        host = url = ""
        if vendor == "Zscaler" or rng.random() < 0.2:
            host = hosts[int(len(hosts) * rng.random() ** 3)]
            url = (
                f"https://{host}/{rng.choice(WORDS)}/{rng.randint(0, 9999)}?v={rng.randint(0, 99)}"
                if port == 443
                else ""
            )
        moment = START + STEP * n
        return [
            moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z", vendor, product,
            rng.choice(sources), str(rng.randint(49152, 65535)), destinations[int(len(destinations) * rng.random() ** 2)],
            str(port), host, url, rng.choice(("allow", "allow", "allow", "deny")),
        ]  # fmt: skip

    def plant(rng: random.Random, row: Row) -> int:
        ip, port = rng.choice(kept).rsplit(":", 1)
        roll = rng.random()
        if roll < 0.60:  # outbound to the C2 endpoint: one ip-port hit
            row[5], row[6] = ip, port
            return 1
        if roll < 0.95:  # the C2's IP on another port: one ip_only hit per IOC of that IP
            row[5], row[6] = ip, next(p for p in ("22", "53", "3389", "8000") if p not in ports_of[ip])
            return sum(f"{ip}:{p}" in kept_set for p in ports_of[ip])
        row[3], row[4], row[5] = ip, port, rng.choice(sources)  # inbound from the C2 endpoint
        return 1

    return row, plant


def generate(scenario: str, records: int, iocs: int, out: Path, seed: int) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    feed_rng, log_rng, plant_rng = (
        random.Random(f"{seed}-{scenario}-{part}") for part in ("feed", "log", "plant")
    )
    values = domain_iocs(feed_rng, iocs) if scenario == "dns" else endpoint_iocs(feed_rng, iocs)
    write_feed(out / "feed.json", values, "domain" if scenario == "dns" else "ip:port", feed_rng)
    (out / "values.txt").write_text("".join(v + "\n" for v in values), encoding="utf-8")
    kept = kept_by_vetting(out / "feed.json", values)
    row, plant = (dns_rows if scenario == "dns" else csl_rows)(log_rng, values, kept)
    planted: list[int] = []
    hits = 0
    with (out / "log.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(DNS_HEADER if scenario == "dns" else CSL_HEADER)
        for n in range(1, records + 1):
            record = row(n)
            if n % PLANT_EVERY == PLANT_EVERY // 2:
                hits += plant(plant_rng, record)
                planted.append(n)
            writer.writerow(record)
    expected: dict[str, object] = {
        "scenario": scenario, "records": records, "iocs": len(values), "kept_iocs": len(kept), "seed": seed,
        "hits": hits, "planted_records": planted,
    }  # fmt: skip
    (out / "expected.json").write_text(json.dumps(expected), encoding="utf-8")
    return expected


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=("dns", "csl"))
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--iocs", type=int, help="default: 250000 (dns), 100000 (csl)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    iocs = args.iocs or (250_000 if args.scenario == "dns" else 100_000)
    expected = generate(args.scenario, args.records, iocs, args.out, args.seed)
    print(f"{args.out}: {expected['records']} records, {expected['iocs']} IOCs, "
          f"{len(expected['planted_records'])} planted records, {expected['hits']} expected hits")  # type: ignore[arg-type]  # fmt: skip


if __name__ == "__main__":
    main()
