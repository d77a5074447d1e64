"""MISP warninglists, offline, indexed for fast look-ups.

The lists are the JSON files shipped inside the `pymispwarninglists` wheel
(``pymispwarninglists/data/misp-warninglists/lists/<name>/list.json``); they are read directly, because
the package's own search goes through every list for every value. `build_index` reads the lists a
policy needs once and indexes them by what their entries are:

- addresses and ranges (MISP ``cidr`` lists, IP entries of other lists): for IPv4 and IPv6 apart, the
  address space cut into segments at every range boundary, each segment knowing the set of lists that
  cover it (ranges of different lists may overlap or nest); a look-up is one `bisect` inside the few
  segments of its /16 (IPv4) or /16-prefix (IPv6) block;
- host names (``hostname``, ``string`` and ``substring`` lists): one dict name -> set of lists; a name
  is looked up with each of its parent suffixes (a listed name covers its subdomains; the match kind,
  exact or subdomain, goes to the policy). A leading dot (``.duckdns.org``) is dropped. ``substring``
  lists are only used for entries that are host names or addresses (never as real substrings: that is
  not safe for IOCs). The two top-million lists keep a set each (see `WarninglistIndex.BIG_LIST`);
- hashes (hex entries of 32, 40 or 64 characters): one dict (a set for a big hash list);
- URLs (entries with ``://``): normalised like URL IOCs, matched as prefixes;
- ``regex`` lists: compiled, tried on the IOC value for the IOC types their `matching_attributes` name.

Sets of lists are interned: an index entry is a small int naming a tuple of list ids. The index is
built once per process and policy, and kept between runs in the user's cache folder (`build_index`).
"""

from __future__ import annotations

import gc
import hashlib
import ipaddress
import json
import os
import pickle
import re
import socket
import tempfile
import time
from array import array
from bisect import bisect_right
from collections.abc import Iterator, MutableSequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import metadata, resources
from itertools import filterfalse, groupby
from operator import itemgetter
from pathlib import Path

from foxhunt.model import IocType
from foxhunt.normalize import InvalidIoc, normalize_domain, normalize_url
from foxhunt.vetting.policy import BuiltinList, Policy

MISP_PACKAGE = "pymispwarninglists"
HASH_LENGTHS = frozenset({32, 40, 64})
_NAME_RE = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_HEX_RE = re.compile(r"[0-9a-f]+")
_HASH_VALUE = re.compile(r"[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}").fullmatch
_IP_CHARS = frozenset("0123456789abcdef.:/")
#: A plain dotted lower-case name whose last label does not end in a digit. Entries that are not (a dot or
#: space at either end, no dot, a colon or slash, non-ASCII...) get a careful look; the rest go in as
#: they are, in bulk.
_PLAIN_NAME = re.compile(r"(?:[a-z0-9_-]+\.)+[a-z0-9_-]*[a-z_-]").fullmatch
#: MISP attribute types that correspond to each IOC type (for `regex` lists' `matching_attributes`).
MISP_ATTRIBUTES: dict[IocType, frozenset[str]] = {
    IocType.IP_PORT: frozenset({"ip-dst|port", "ip-src|port", "ip-dst", "ip-src", "domain|ip"}),
    IocType.DOMAIN: frozenset({"domain", "hostname", "domain|ip"}),
    IocType.URL: frozenset({"url", "uri", "link"}),
    IocType.MD5: frozenset({"md5", "filename|md5"}),
    IocType.SHA1: frozenset({"sha1", "filename|sha1"}),
    IocType.SHA256: frozenset({"sha256", "filename|sha256"}),
}


@dataclass(frozen=True, slots=True)
class ListInfo:
    """One indexed list: its name (the reason name), MISP metadata and how many entries were usable."""

    name: str
    title: str
    description: str
    type: str
    source: str  # "misp" or "foxhunt" (a builtin list of the policy)
    version: int | None = None
    matching_attributes: tuple[str, ...] = ()
    entries: int = 0
    skipped: int = 0


# ---- the shipped lists ----------------------------------------------------------------------------


def misp_lists_dir() -> Path:
    """The folder of the MISP warninglists inside the installed `pymispwarninglists` package."""
    root = resources.files(MISP_PACKAGE).joinpath("data", "misp-warninglists", "lists")
    return Path(str(root))


def misp_data_version() -> str:
    """Version of the `pymispwarninglists` distribution the lists come from."""
    return metadata.version(MISP_PACKAGE)


@cache
def available_lists() -> frozenset[str]:
    """Names (folder names) of the MISP warninglists shipped by `pymispwarninglists`."""
    return frozenset(p.parent.name for p in misp_lists_dir().glob("*/list.json"))


def load_misp_list(name: str) -> dict:
    """The JSON document of one shipped MISP warninglist."""
    with (misp_lists_dir() / name / "list.json").open(encoding="utf-8") as handle:
        return json.load(handle)


@cache
def public_suffixes() -> frozenset[str]:
    """Public suffixes (IANA TLDs and Mozilla's second-level list, as shipped in the MISP lists)."""
    suffixes: set[str] = set()
    for name in ("tlds", "second-level-tlds"):
        if name in available_lists():
            suffixes.update(e.strip().strip(".").lower() for e in load_misp_list(name)["list"])
    suffixes.discard("")
    return frozenset(suffixes)


def is_registered_domain(name: str, suffixes: frozenset[str] | None = None) -> bool:
    """True when `name` is a registered domain: one label under its longest public suffix
    (``google.com``, ``x.duckdns.org``; not ``mail.google.com`` nor ``co.uk``)."""
    suffixes = public_suffixes() if suffixes is None else suffixes
    if name in suffixes:
        return False
    labels = name.split(".")
    for start in range(1, len(labels)):
        if ".".join(labels[start:]) in suffixes:
            return start == 1
    return len(labels) == 2  # unknown TLD: the last label is the suffix


# ---- parsing entries --------------------------------------------------------------------------------


def parse_ip_int(text: str) -> tuple[int, int] | None:
    """(4 or 6, integer) of an IP address text, None if it is not one (no shorthand IPv4 forms)."""
    try:
        if ":" in text:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        return None


def parse_range(text: str) -> tuple[int, int, int] | None:
    """(version, first, last) of an address or CIDR (host bits ignored), None if it is neither."""
    address, slash, length = text.strip().partition("/")
    parsed = parse_ip_int(address)
    if parsed is None:
        return None
    version, value = parsed
    bits = 32 if version == 4 else 128
    if slash:
        if not length.isdigit() or not 0 <= int(length) <= bits:
            return None
        host_bits = bits - int(length)
    else:
        host_bits = 0
    first = value >> host_bits << host_bits
    return version, first, first | ((1 << host_bits) - 1)


_URL_HOST = re.compile(r"[^:/?#]*://(?:[^@/?#]*@)?(?:\[([^\]/?#]*)\]|([^:/?#]*))").match


def special_use_properties(address: str) -> tuple[str, ...]:
    """What Python's `ipaddress` says is special about an address: private, reserved, multicast,
    link-local, loopback, unspecified, site-local (IPv6), and shared (RFC 6598 100.64.0.0/10, which it does not call
    private). Empty for an ordinary global address."""
    ip = ipaddress.ip_address(address)
    found = tuple(name for name, flag in _PROPERTIES if getattr(ip, flag, False))
    if ip.version == 4 and ip in _SHARED_ADDRESS_SPACE:
        found += ("shared",)
    return found


_PROPERTIES = (
    ("private", "is_private"),
    ("reserved", "is_reserved"),
    ("multicast", "is_multicast"),
    ("link-local", "is_link_local"),
    ("loopback", "is_loopback"),
    ("unspecified", "is_unspecified"),
    ("site-local", "is_site_local"),  # IPv6 only
)
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")


def url_host(url: str) -> str:
    """The host of a URL IOC (``scheme://host[:port]/...``); IPv6 without its brackets."""
    match = _URL_HOST(url)
    if match is None:
        return ""
    bracketed, host = match.groups()
    return host if bracketed is None else bracketed


def _php_regex(entry: str) -> re.Pattern[str] | None:
    """A MISP ``/pattern/flags`` regex as a Python pattern (None when it does not compile)."""
    if len(entry) < 2 or entry[0] != "/" or entry.rfind("/") == 0:
        return None
    end = entry.rfind("/")
    flags = 0
    for flag in entry[end + 1 :]:
        flags |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}.get(flag, 0)
    try:
        return re.compile(entry[1:end], flags)
    except re.error:
        return None


# ---- the index --------------------------------------------------------------------------------------


@dataclass(slots=True)
class RangeList:
    """One list's ranges of one IP version, sorted, to name the entry an address matched."""

    starts: list[int]
    ends: list[int]
    max_ends: list[int]  # running maximum of ends: the walk back stops where no range can reach
    texts: list[str]

    @classmethod
    def of(cls, ranges: list[tuple[int, int, str]]) -> RangeList:
        ranges.sort()
        max_ends, top = [], -1
        for _, end, _ in ranges:
            top = max(top, end)
            max_ends.append(top)
        return cls([r[0] for r in ranges], [r[1] for r in ranges], max_ends, [r[2] for r in ranges])

    def entry(self, value: int) -> str | None:
        """The most specific entry holding `value`."""
        i = bisect_right(self.starts, value) - 1
        while i >= 0 and self.max_ends[i] >= value:
            if self.ends[i] >= value:
                return self.texts[i]
            i -= 1
        return None


@dataclass(slots=True)
class _Segments:
    """The address space of one IP version cut at every range boundary: `starts[i]` begins a segment
    covered by the lists of set `set_ids[i]`. `window[b]` is the segment holding the first address of
    the b-th of 65,536 equal blocks (the top 16 bits), so a look-up bisects a few segments, not all."""

    bits: int
    starts: MutableSequence[int] = field(default_factory=lambda: [0])
    set_ids: MutableSequence[int] = field(default_factory=lambda: [0])
    window: array = field(default_factory=lambda: array("I"))

    def seal(self) -> None:
        shift = self.bits - _WINDOW_BITS
        starts = self.starts
        self.window = array("I", (bisect_right(starts, b << shift) - 1 for b in range(1 << _WINDOW_BITS)))
        self.window.append(len(starts) - 1)
        if self.bits == 32:
            # contiguous machine words: a bisect touches a few cache lines, not scattered int objects
            self.starts = array("L", starts)
            self.set_ids = array("I", self.set_ids)

    def lookup(self, value: int) -> int:
        block = value >> (self.bits - _WINDOW_BITS)
        window = self.window
        return self.set_ids[bisect_right(self.starts, value, window[block], window[block + 1] + 1) - 1]


_WINDOW_BITS = 16


class WarninglistIndex:
    """Every list a policy uses, indexed; list ids are positions in `lists`, set ids name tuples of list
    ids in `sets` (set 0 is the empty set). Lists of more than `BIG_LIST` values (Tranco's and Chrome's
    top million, NSRL-style hash lists) keep a set of their own in `big_names` / `big_hashes` instead
    of joining `names` and `hashes`: merging a million entries into a shared dict costs seconds, one
    more set look-up per name a fraction of a microsecond."""

    BIG_LIST = 150_000

    def __init__(self) -> None:
        self.lists: list[ListInfo] = []
        self.sets: list[tuple[int, ...]] = [()]
        self._set_ids: dict[tuple[int, ...], int] = {(): 0}
        self._unions: dict[tuple[int, int], int] = {}
        self.names: dict[str, int] = {}
        self.hashes: dict[str, int] = {}
        self.big_names: list[tuple[int, set[str]]] = []  # read-only once built
        self.big_hashes: list[tuple[int, set[str]]] = []
        self.urls: list[tuple[str, int]] = []
        self.url_prefixes: tuple[str, ...] = ()
        self.regexes: list[tuple[int, re.Pattern[str], frozenset[IocType]]] = []
        self.segments: dict[int, _Segments] = {4: _Segments(32), 6: _Segments(128)}
        self._raw_ranges: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}  # (first, last, list id)
        self._entry_ranges: dict[tuple[int, int], list[tuple[int, int, str]]] = {}
        self._entry_index: dict[tuple[int, int], RangeList] = {}
        self.build_seconds = 0.0  # how long build_index took (reading the cache, or building)
        self.from_cache = False

    # -- building --

    def _set_of(self, members: tuple[int, ...]) -> int:
        found = self._set_ids.get(members)
        if found is None:
            found = self._set_ids[members] = len(self.sets)
            self.sets.append(members)
        return found

    def _add(self, set_id: int, list_id: int) -> int:
        """The id of set `set_id` plus `list_id`."""
        key = (set_id, list_id)
        found = self._unions.get(key)
        if found is None:
            members = self.sets[set_id]
            found = self._set_of(members if list_id in members else tuple(sorted((*members, list_id))))
            self._unions[key] = found
        return found

    def _merge(self, target: dict[str, int], values: set[str], list_id: int) -> None:
        """Add `list_id` to the set of every value (bulk: only values already present cost a step)."""
        common = set(filter(target.__contains__, values))
        for value in common:
            target[value] = self._add(target[value], list_id)
        target.update(dict.fromkeys(values - common if common else values, self._set_of((list_id,))))

    def add_list(self, info: ListInfo, entries: list[str]) -> ListInfo:
        """Index the entries of one list; returns `info` with the entry counts."""
        list_id = len(self.lists)
        self.lists.append(info)
        if info.type == "regex":
            used, skipped = self._add_regexes(list_id, info, entries)
        elif info.type == "cidr":
            used, skipped = self._add_ranges(list_id, entries)
        else:
            used, skipped = self._add_values(list_id, entries)
        counted = ListInfo(
            info.name, info.title, info.description, info.type, info.source, info.version,
            info.matching_attributes, used, skipped,
        )  # fmt: skip
        self.lists[list_id] = counted
        return counted

    def _add_regexes(self, list_id: int, info: ListInfo, entries: list[str]) -> tuple[int, int]:
        attributes = set(info.matching_attributes)
        applies = frozenset(t for t, attrs in MISP_ATTRIBUTES.items() if attrs & attributes)
        used = 0
        for entry in entries:
            pattern = _php_regex(entry)
            if pattern is not None and applies:
                self.regexes.append((list_id, pattern, applies))
                used += 1
        return used, len(entries) - used

    def _add_ranges(self, list_id: int, entries: list[str]) -> tuple[int, int]:
        raw_ranges, texts = self._raw_ranges, self._entry_ranges
        v4: list[tuple[int, int, str]] = []
        v6: list[tuple[int, int, str]] = []
        pton, from_bytes = socket.inet_pton, int.from_bytes
        for entry in entries:  # parse_range, inlined: this loop sees a quarter of a million entries
            address, slash, length = entry.strip().partition("/")
            try:
                if ":" in address:
                    value, bits, target = from_bytes(pton(socket.AF_INET6, address), "big"), 128, v6
                else:
                    value, bits, target = from_bytes(pton(socket.AF_INET, address), "big"), 32, v4
            except OSError:
                continue
            if slash:
                if not length.isdigit() or int(length) > bits:
                    continue
                host_bits = bits - int(length)
                value = value >> host_bits << host_bits
                target.append((value, value | ((1 << host_bits) - 1), entry))
            else:
                target.append((value, value, entry))
        for version, found in ((4, v4), (6, v6)):
            if found:
                raw_ranges[version].extend((first, last, list_id) for first, last, _ in found)
                texts.setdefault((list_id, version), []).extend(found)
        used = len(v4) + len(v6)
        return used, len(entries) - used

    def _add_values(self, list_id: int, entries: list[str]) -> tuple[int, int]:
        """Host names, hashes, URLs and the odd address of a hostname/string/substring list."""
        values = set(map(str.lower, entries))
        odd = set(filterfalse(_PLAIN_NAME, values))
        hashes = set(filter(_HASH_VALUE, odd)) if odd else set()
        if odd:
            values.difference_update(odd)
            odd.difference_update(hashes)
        names = values  # now only plain names
        used = len(names) + len(hashes)
        for value in odd:
            kind, normal = self._classify(value)
            if kind == "name":
                names.add(normal)
            elif kind == "hash":
                hashes.add(normal)
            elif kind is not None:
                self._add_other(list_id, kind, normal, value)
            else:
                continue
            used += 1
        if len(names) + len(hashes) > self.BIG_LIST:
            if names:
                self.big_names.append((list_id, names))
            if hashes:
                self.big_hashes.append((list_id, hashes))
        else:
            self._merge(self.names, names, list_id)
            if hashes:
                self._merge(self.hashes, hashes, list_id)
        return used, len(entries) - used

    def _add_other(self, list_id: int, kind: str, normal: str, raw: str) -> None:
        if kind == "url":
            self.urls.append((normal, list_id))
        else:  # an address or range in a name list
            version, first, last = parse_range(normal)  # type: ignore[misc]
            self._raw_ranges[version].append((first, last, list_id))
            self._entry_ranges.setdefault((list_id, version), []).append((first, last, raw.strip()))

    @staticmethod
    def _classify(value: str) -> tuple[str | None, str]:
        """What an entry that is not a plain dotted name is: (name|hash|url|range, normal form), or
        (None, value) when it cannot match an IOC."""
        text = value.strip()
        if "://" in text:
            try:
                return "url", normalize_url(text)
            except InvalidIoc:
                return None, value
        if text and set(text) <= _IP_CHARS and parse_range(text) is not None:
            return "range", text
        if "." not in text and len(text) in HASH_LENGTHS and _HEX_RE.fullmatch(text):
            return "hash", text
        name = text.strip(".")
        if _NAME_RE.fullmatch(name):
            return ("name", name) if not name.rpartition(".")[2].isdigit() else (None, value)
        if name.isascii():
            return None, value
        try:
            return "name", normalize_domain(name, min_labels=1)
        except InvalidIoc:
            return None, value

    def finish(self) -> WarninglistIndex:
        """Cut the address spaces into segments (a sweep over every range boundary)."""
        for version, ranges in self._raw_ranges.items():
            starts = [(first, 1, lid) for first, _, lid in ranges]
            ends = [(last + 1, -1, lid) for _, last, lid in ranges]
            events = starts + ends
            events.sort()
            active: dict[int, int] = {}
            segments = _Segments(32 if version == 4 else 128)
            seg_starts, seg_sets = segments.starts, segments.set_ids
            for position, group in groupby(events, key=itemgetter(0)):
                for _, delta, lid in group:
                    count = active.get(lid, 0) + delta
                    if count:
                        active[lid] = count
                    else:
                        del active[lid]
                set_id = self._set_of(tuple(sorted(active)))
                if seg_sets[-1] == set_id:
                    continue
                if seg_starts[-1] == position:
                    seg_sets[-1] = set_id
                else:
                    seg_starts.append(position)
                    seg_sets.append(set_id)
            segments.seal()
            self.segments[version] = segments
        self._raw_ranges = {4: [], 6: []}
        self.urls.sort()
        self.url_prefixes = tuple(prefix for prefix, _ in self.urls)
        self._unions.clear()
        return self

    # -- look-ups --

    def ip_set(self, version: int, value: int) -> int:
        """Set id of the lists whose ranges hold the address."""
        return self.segments[version].lookup(value)

    def ip_entry(self, list_id: int, version: int, value: int) -> str | None:
        """The entry (range or address, as written in the list) of `list_id` holding the address."""
        key = (list_id, version)
        index = self._entry_index.get(key)
        if index is None:
            index = self._entry_index[key] = RangeList.of(self._entry_ranges.get(key, []))
        return index.entry(value)

    def url_matches(self, url: str) -> Iterator[tuple[int, str]]:
        """(list id, prefix) of every listed URL prefix of `url`."""
        if self.url_prefixes and url.startswith(self.url_prefixes):
            for prefix, list_id in self.urls:
                if url.startswith(prefix):
                    yield list_id, prefix


def _misp_info(name: str, doc: dict) -> ListInfo:
    return ListInfo(
        name=name,
        title=str(doc.get("name", name)),
        description=str(doc.get("description", "")),
        type=str(doc.get("type", "string")),
        source="misp",
        version=int(doc["version"]) if str(doc.get("version", "")).isdigit() else None,
        matching_attributes=tuple(doc.get("matching_attributes") or ()),
    )


_BUILTIN_AS_MISP_TYPE = {"cidr": "cidr", "hostname": "hostname", "hash": "string", "url": "string"}


@lru_cache(maxsize=2)  # an index of the full policy holds ~400 MB
def _build(
    misp_names: tuple[str, ...], builtins: tuple[BuiltinList, ...], cache_dir: Path | None
) -> WarninglistIndex:
    was_enabled = gc.isenabled()
    gc.disable()  # millions of strings, no cycles: the collector would rescan them again and again
    try:
        started = time.perf_counter()
        key = _cache_key(misp_names, builtins)
        index = _read_cache(cache_dir, key) if cache_dir else None
        if index is None:
            index = _build_index(misp_names, builtins)
            if cache_dir:
                _write_cache(cache_dir, key, index)
        else:
            index.from_cache = True
        index.build_seconds = time.perf_counter() - started
        return index
    finally:
        if was_enabled:
            gc.enable()


def _build_index(misp_names: tuple[str, ...], builtins: tuple[BuiltinList, ...]) -> WarninglistIndex:
    index = WarninglistIndex()
    for builtin in builtins:
        info = ListInfo(
            builtin.name, builtin.name, builtin.description, _BUILTIN_AS_MISP_TYPE[builtin.type], "foxhunt"
        )
        index.add_list(info, list(builtin.entries))
    for name in misp_names:
        doc = load_misp_list(name)
        index.add_list(_misp_info(name, doc), list(doc.get("list") or ()))
    return index.finish()


# ---- the on-disk cache ------------------------------------------------------------------------------
#
# Building the index reads ~65 MB of JSON and indexes 2.5 million entries (seconds); loading it back
# from a pickle takes a fraction of that. The cache lives in the user's own cache folder, is keyed by
# everything the index depends on (this module's code, the pymispwarninglists version and the lists a
# policy indexes), and is only an optimisation: any problem reading or writing it means a fresh build.

CACHE_ENV = "FOXHUNT_CACHE_DIR"
_CACHE_FORMAT = 1


def default_cache_dir() -> Path | None:
    """``$FOXHUNT_CACHE_DIR`` (``off`` disables the cache), else ``$XDG_CACHE_HOME/foxhunt``, else
    ``~/.cache/foxhunt``."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "0", "no") else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory: no cache
            return None
    return Path(base) / "foxhunt"


def _cache_key(misp_names: tuple[str, ...], builtins: tuple[BuiltinList, ...]) -> str:
    code = Path(__file__).stat()
    lists = misp_lists_dir()
    material = repr(
        (_CACHE_FORMAT, code.st_size, code.st_mtime_ns, misp_data_version(), str(lists), misp_names, builtins)
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def _cache_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"warninglists-{key}.pickle"


def _read_cache(cache_dir: Path, key: str) -> WarninglistIndex | None:
    path = _cache_file(cache_dir, key)
    try:
        if path.stat().st_uid != os.getuid():  # only a file this user wrote
            return None
        stored_key, index = pickle.loads(path.read_bytes())
    except Exception:  # missing, unreadable, truncated or from another version: rebuild
        return None
    return index if stored_key == key and isinstance(index, WarninglistIndex) else None


def _write_cache(cache_dir: Path, key: str, index: WarninglistIndex) -> None:
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for old in cache_dir.glob("warninglists-*.pickle"):
            old.unlink(missing_ok=True)  # an index for other code or data: never read again
        handle, temp = tempfile.mkstemp(dir=cache_dir, prefix=".warninglists-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                pickle.dump((key, index), out, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temp, _cache_file(cache_dir, key))
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only home, a full disk: the index works without its cache


def index_spec(policy: Policy) -> tuple[tuple[str, ...], tuple[BuiltinList, ...]]:
    """The lists `policy` needs indexed: every list whose category reports some kind of match."""
    misp = tuple(sorted(n for n in available_lists() if not policy.category_of(n).inert))
    builtins = tuple(b for b in policy.builtin_lists.values() if not policy.category_of(b.name).inert)
    return misp, builtins


_DEFAULT = object()


def build_index(policy: Policy, cache_dir: Path | object | None = _DEFAULT) -> WarninglistIndex:
    """The index of the lists `policy` uses: built once per set of lists and process, and kept in the
    on-disk cache (`default_cache_dir()`, or `cache_dir`; None: no disk cache) between runs."""
    directory = default_cache_dir() if cache_dir is _DEFAULT else cache_dir
    return _build(*index_spec(policy), directory)  # type: ignore[arg-type]
