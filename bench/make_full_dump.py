"""Write a synthetic ThreatFox full dump (CSV export layout) of N IOCs, deterministically.

    python bench/make_full_dump.py 1500000 bench/out/full.csv [--zip] [--seed 2024]

Layout as in abuse.ch's export (see /work/shared/data/threatfox/README.md): a ``#`` comment block, the
commented header line, one row per IOC with every value quoted and separated by ``", "``, ``None`` or
``""`` for missing values, newest first, and a ``# Number of entries: N`` footer.

Mix: ip:port 35 %, domain 20 %, url 30 %, sha256 10 %, md5 3 %, sha1 2 %; ~1,500 families whose sizes
follow a Zipf law (s = 1.3: three families above 100k IOCs at N = 1.5M, the median family a few tens);
about 0.1 % invalid rows (port 0, a hash of the wrong length) so the reject path runs, and 0.5 % values
reported again under a new id so deduplication has work. The ten largest families mix every IOC type;
every other family has a dominant type (drawn with the global weights) for 90 % of its rows. Rows are
written as they are drawn; nothing of size N is held in memory.
"""

from __future__ import annotations

import argparse
import io
import random
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import IO

COLUMNS = (
    "first_seen_utc", "ioc_id", "ioc_value", "ioc_type", "threat_type", "fk_malware", "malware_alias",
    "malware_printable", "last_seen_utc", "confidence_level", "is_compromised", "reference", "tags",
    "anonymous", "reporter",
)  # fmt: skip
HEADER = """\
################################################################
# ThreatFox IOCs: full data dump - CSV format                  #
# Last updated: 2026-05-25 12:00:00 UTC                        #
#                                                              #
# Terms Of Use: https://threatfox.abuse.ch/faq/#tos            #
# For questions please contact threatfox [at] abuse.ch         #
################################################################
#
"""
IOC_TYPES = ("ip:port", "domain", "url", "sha256_hash", "md5_hash", "sha1_hash")
IOC_WEIGHTS = (35, 20, 30, 10, 3, 2)
THREAT_TYPES = {  # (threat types, weights) consistent with the IOC type
    "ip:port": (("botnet_cc", "payload_delivery"), (92, 8)),
    "domain": (("botnet_cc", "payload_delivery"), (75, 25)),
    "url": (("payload_delivery", "botnet_cc"), (85, 15)),
    "sha256_hash": (("payload",), (1,)),
    "md5_hash": (("payload",), (1,)),
    "sha1_hash": (("payload",), (1,)),
}
FAMILIES = 1500
ZIPF_S = 1.3
INVALID_RATE = 0.001
MIXED_FAMILIES = 10  # the largest families draw every row's type from the global mix
SPECIALISED = 0.9  # share of a smaller family's rows of its dominant type
REPEAT_RATE = 0.005  # a value reported again under a new id (the deduplication path)
START = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())
END = int(datetime(2026, 5, 25, 11, 0, tzinfo=UTC).timestamp())
FIRST_ID = 100_000
PLATFORMS = ("win", "win", "win", "elf", "apk", "js", "osx", "ps1")
SYLLABLES = tuple(c + v for c in "bcdfghklmnprstvz" for v in "aeiou")
TLDS = ("com", "net", "org", "ru", "xyz", "top", "info", "cn", "io", "online", "site", "shop", "de", "br")
PORTS = (443, 80, 8080, 8443, 4444, 2404, 7000, 6606, 5552, 1604, 3128, 9001)
PATH_WORDS = ("wp-content", "uploads", "admin", "gate", "bin", "files", "images", "api", "update", "download")
FILE_EXTS = (".php", ".exe", ".zip", ".bin", ".js", ".dll", "", "/")


@contextmanager
def open_output(path: Path, member: str | None) -> Iterator[IO[str]]:
    """A text stream to `path`, or to the zip archive `path`'s one `member` (streamed, zip64)."""
    if member is None:
        with path.open("w", encoding="utf-8", newline="\n", buffering=1 << 20) as handle:
            yield handle
        return
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive,
        archive.open(member, "w", force_zip64=True) as raw,
        io.TextIOWrapper(raw, encoding="utf-8", newline="\n", write_through=False) as handle,
    ):
        yield handle


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choices(SYLLABLES, k=syllables))


def _families(rng: random.Random) -> list[tuple[str, str, str, str]]:
    """(fk_malware, malware_printable, malware_alias, dominant ioc_type) per family, biggest first."""
    seen: set[str] = set()
    families = []
    while len(families) < FAMILIES:
        name = _word(rng, rng.randint(2, 4))
        if name in seen:
            continue
        seen.add(name)
        printable = name.capitalize() + (rng.choice(("", " RAT", " Stealer", " Loader", "Bot")))
        others = (_word(rng, 3).capitalize() for _ in range(rng.randint(0, 2)))
        aliases = ",".join(sorted({printable.replace(" ", ""), *others})) if rng.random() < 0.6 else "None"
        dominant = rng.choices(IOC_TYPES, IOC_WEIGHTS)[0]
        families.append((f"{rng.choice(PLATFORMS)}.{name}", printable, aliases, dominant))
    return families


def _ip(rng: random.Random) -> str:
    first = rng.choice((rng.randint(1, 223), 45, 91, 185, 193, 194))
    while first in (10, 127):
        first = rng.randint(1, 223)
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _domain(rng: random.Random) -> str:
    name = f"{_word(rng, rng.randint(2, 4))}{rng.randint(0, 99_999)}.{rng.choice(TLDS)}"
    return f"{_word(rng, 2)}.{name}" if rng.random() < 0.25 else name


def _value(rng: random.Random, ioc_type: str, invalid: bool) -> str:
    if ioc_type == "ip:port":
        port = 0 if invalid else rng.choice(PORTS) if rng.random() < 0.7 else rng.randint(1024, 65535)
        return f"{_ip(rng)}:{port}"
    if ioc_type == "domain":
        return _domain(rng)
    if ioc_type == "url":
        host = _ip(rng) if rng.random() < 0.3 else _domain(rng)
        port = f":{rng.choice(PORTS)}" if rng.random() < 0.15 else ""
        path = "/".join(rng.choices(PATH_WORDS, k=rng.randint(0, 3)))
        leaf = f"{_word(rng, 3)}{rng.randint(0, 9999)}{rng.choice(FILE_EXTS)}"
        query = f"?id={rng.getrandbits(32):x}" if rng.random() < 0.2 else ""
        scheme = rng.choice(("http", "http", "https"))
        return f"{scheme}://{host}{port}/{path + '/' if path else ''}{leaf}{query}"
    digits = {"sha256_hash": 64, "md5_hash": 32, "sha1_hash": 40}[ioc_type]
    if invalid:
        digits -= rng.randint(1, 8)
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


def _stamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def write_dump(count: int, handle: IO[str], seed: int = 2024) -> int:
    """Write `count` rows (newest first) with header and footer; returns the number of invalid rows."""
    rng = random.Random(seed)
    families = _families(rng)
    ranks = range(FAMILIES)
    family_weights = list(accumulate(1.0 / (rank**ZIPF_S) for rank in range(1, FAMILIES + 1)))
    type_weights = list(accumulate(IOC_WEIGHTS))
    reporters = [f"reporter_{_word(rng, 2)}{n}" for n in range(300)]
    reporter_weights = list(accumulate(1.0 / rank for rank in range(1, len(reporters) + 1)))
    handle.write(HEADER)
    handle.write("# " + ",".join(f'"{c}"' for c in COLUMNS) + "\n")
    step = (END - START) / max(count, 1)
    invalid_rows = 0
    recent: list[tuple[str, str]] = []  # a ring of recent (ioc_type, value) pairs to repeat from
    for n in range(count):
        first_seen = END - int(n * step + rng.random() * step)
        rank = rng.choices(ranks, cum_weights=family_weights)[0]
        malware, printable, aliases, dominant = families[rank]
        if rank >= MIXED_FAMILIES and rng.random() < SPECIALISED:
            ioc_type = dominant
        else:
            ioc_type = rng.choices(IOC_TYPES, cum_weights=type_weights)[0]
        invalid = ioc_type in ("ip:port", "sha256_hash") and rng.random() < INVALID_RATE / 0.45
        invalid_rows += invalid
        if recent and not invalid and rng.random() < REPEAT_RATE:
            ioc_type, value = rng.choice(recent)
        else:
            value = _value(rng, ioc_type, invalid)
            if len(recent) < 4096:
                recent.append((ioc_type, value))
            else:
                recent[n % 4096] = (ioc_type, value)
        threat_types, weights = THREAT_TYPES[ioc_type]
        last_seen = _stamp(min(END, first_seen + rng.randint(3600, 90 * 86400))) if rng.random() < 0.3 else ""
        confidence = rng.choice((100, 100, 75, 50)) if rng.random() < 0.8 else rng.randint(25, 100)
        reference = f"https://example.org/report/{rng.getrandbits(24):x}" if rng.random() < 0.2 else "None"
        row = (
            _stamp(first_seen), str(FIRST_ID + count - n), value, ioc_type,
            rng.choices(threat_types, weights)[0], malware, aliases, printable, last_seen, str(confidence),
            "False", reference, aliases if rng.random() < 0.7 else "None", "0",
            rng.choices(reporters, cum_weights=reporter_weights)[0],
        )  # fmt: skip
        handle.write('"' + '", "'.join(row) + '"\n')
    handle.write(f"# Number of entries: {count}\n")
    return invalid_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("count", type=int, help="number of IOC rows")
    parser.add_argument("output", type=Path, help="CSV file to write (a .zip archive with --zip)")
    parser.add_argument("--zip", action="store_true", help="write a zip holding one .csv member")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.name + ".part")  # never leave a truncated dump behind
    member = args.output.name.removesuffix(".zip").removesuffix(".csv") + ".csv" if args.zip else None
    with open_output(partial, member) as handle:
        invalid = write_dump(args.count, handle, args.seed)
    partial.replace(args.output)
    print(f"{args.output}: {args.count} rows ({invalid} invalid)")


if __name__ == "__main__":
    main()
