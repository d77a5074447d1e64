"""IOC vetting: keep, flag or drop each ThreatFox IOC before it becomes a rule.

A feed carries IOCs that would flood a SOC (public DNS resolvers, private and documentation addresses,
top sites, empty-file hashes) and real ones on shared infrastructure (a GitHub raw URL, a dynamic-DNS
name, a URL shortener). A `Vetter`, built once, checks every IOC against

- the organisation's allowlist (`allowlist.py`): an allowlisted IOC is dropped;
- ``--min-confidence`` and the maximum age of its type (`expiry.py`): dropped when below or older;
- the MISP warninglists shipped by `pymispwarninglists` and foxhunt's builtin lists, indexed once
  (`warninglists.py`), through the policy (`policy.py`, `policy.yaml`): list -> category -> action.

>>> vetter = Vetter()  # doctest: +SKIP
>>> vetter.vet(ioc).verdict, vetter.vet(ioc).reasons  # doctest: +SKIP
('drop', ('public-dns-v4',))
>>> result = vetter.vet_all(feed.iocs)  # doctest: +SKIP
>>> result.kept, result.flagged, result.dropped  # doctest: +SKIP

The verdict of an IOC is its worst match: ``drop`` > ``flag`` > ``keep``; its reasons are the names of
the lists (or ``allowlist``) that gave it. An IOC older than its max age or below ``--min-confidence``
is dropped for that alone (reasons ``max-age`` / ``min-confidence``), without a look at the lists. A URL
IOC is judged by its host and prefix but stays a URL: it is never turned into a domain IOC.
"""

from __future__ import annotations

import gc
import ipaddress
import socket
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from foxhunt.model import Ioc, IocType
from foxhunt.vetting.allowlist import Allowlist, AllowlistError, load_allowlist, parse_allowlist
from foxhunt.vetting.expiry import MaxAge, MaxAgeError, format_age, is_expired
from foxhunt.vetting.policy import (
    DROP,
    FLAG,
    IGNORE,
    KEEP,
    MATCH_KINDS,
    SEVERITY,
    Category,
    Policy,
    PolicyError,
    load_policy,
)
from foxhunt.vetting.warninglists import (
    ListInfo,
    WarninglistIndex,
    build_index,
    is_registered_domain,
    parse_ip_int,
    public_suffixes,
    special_use_properties,
    url_host,
)
from foxhunt.vetting.yamlnodes import ConfigError

__all__ = [
    "DROP",
    "FLAG",
    "KEEP",
    "Allowlist",
    "AllowlistError",
    "ConfigError",
    "Match",
    "MaxAge",
    "MaxAgeError",
    "Policy",
    "PolicyError",
    "Verdict",
    "VetResult",
    "Vetter",
    "load_allowlist",
    "load_policy",
    "parse_allowlist",
    "url_host",
]

ALLOWLIST, MAX_AGE, MIN_CONFIDENCE = "allowlist", "max-age", "min-confidence"
_AGE_REASONS, _CONFIDENCE_REASONS = (MAX_AGE,), (MIN_CONFIDENCE,)
SPECIAL_USE = "special-use"  # the category whose builtin ranges are annotated with ipaddress's view
_IP_PORT, _DOMAIN, _URL = IocType.IP_PORT, IocType.DOMAIN, IocType.URL
_pton, _AF_INET, _AF_INET6, _from_bytes = socket.inet_pton, socket.AF_INET, socket.AF_INET6, int.from_bytes


@dataclass(frozen=True, slots=True)
class Match:
    """One reason: a list (or the allowlist, max-age, min-confidence) that matched, how, and its action."""

    name: str
    category: str
    kind: str
    action: str
    entry: str | None = None  # the list entry that matched (a range, a name, a prefix), or a detail


@dataclass(frozen=True, slots=True)
class Verdict:
    """The vetting outcome of one IOC: ``keep``, ``flag`` or ``drop``, with the names of the lists (or
    checks) that gave that outcome, and every match in `matches`."""

    ioc: Ioc
    verdict: str
    reasons: tuple[str, ...] = ()
    matches: tuple[Match, ...] = ()

    @property
    def kept(self) -> bool:
        """True for keep and flag (a flagged IOC stays in the pack)."""
        return self.verdict != DROP

    def to_json(self) -> dict[str, object]:
        """``{"ioc", "ioc_type", "family", "verdict", "reasons"}``."""
        return {
            "ioc": self.ioc.value,
            "ioc_type": self.ioc.ioc_type.value,
            "family": self.ioc.malware_printable or self.ioc.malware,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
        }


@dataclass(slots=True)
class VetResult:
    """`kept`: the IOCs for the pack (keep and flag, input order); `flagged`: IOC value -> reasons of the
    kept ones with a lower severity; `dropped`: the verdicts of the IOCs that leave the pack."""

    kept: list[Ioc] = field(default_factory=list)
    flagged: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dropped: list[Verdict] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """IOCs per verdict."""
        return {KEEP: len(self.kept) - len(self.flagged), FLAG: len(self.flagged), DROP: len(self.dropped)}

    def reason_counts(self) -> dict[tuple[str, str], int]:
        """(verdict, reason) -> number of IOCs, most frequent first."""
        counter: Counter[tuple[str, str]] = Counter()
        for reasons in self.flagged.values():
            counter.update((FLAG, r) for r in reasons)
        for verdict in self.dropped:
            counter.update((DROP, r) for r in verdict.reasons)
        return dict(counter.most_common())


def _max_age(value: MaxAge | Mapping[IocType | str, timedelta | None] | Iterable[str] | None) -> MaxAge:
    if value is None:
        return MaxAge.defaults()
    if isinstance(value, MaxAge):
        return value
    if isinstance(value, Mapping):
        ages = dict(MaxAge.defaults().ages)
        ages.update({IocType(k): v for k, v in value.items()})
        return MaxAge(ages)
    return MaxAge.defaults().with_specs(value)


class Vetter:
    """Vets IOCs against the allowlist, the expiry and confidence rules, and the warninglists of a policy.

    Build it once (the index of the lists is built on first use of a policy's set of lists and shared);
    `vet` is then a few dict and bisect look-ups per IOC. `max_age`: a `MaxAge`, a mapping IOC type ->
    timedelta (None: never) over the defaults, ``--max-age`` specs, or None for the packaged defaults
    (`MaxAge.disabled()` turns expiry off). `now` (default: the current time) is what ages are measured
    to. `min_confidence`: IOCs below it are dropped (an IOC without confidence counts as 0, like
    ``build --min-confidence``).
    """

    def __init__(
        self,
        policy: Policy | None = None,
        allowlist: Allowlist | None = None,
        max_age: MaxAge | Mapping[IocType | str, timedelta | None] | Iterable[str] | None = None,
        now: datetime | None = None,
        *,
        min_confidence: int | None = None,
    ) -> None:
        self.policy = policy if policy is not None else load_policy()
        self.allowlist = allowlist if allowlist is not None else Allowlist()
        self.max_age = _max_age(max_age)
        now = now if now is not None else datetime.now(UTC)
        self.now = now if now.tzinfo else now.replace(tzinfo=UTC)
        self.min_confidence = min_confidence
        self.index: WarninglistIndex = build_index(self.policy)
        self._cutoffs = self.max_age.cutoffs(self.now)
        self._categories: list[Category] = [self.policy.category_of(info.name) for info in self.index.lists]
        self._resolved: dict[tuple[int, str], tuple[tuple[int, str], ...]] = {}
        self._notes: dict[tuple[str, tuple[str, ...]], str] = {}  # see note()
        self._psl = public_suffixes()
        self._segments = self.index.segments
        self._url_prefixes = self.index.url_prefixes
        self._big_names = self._with_actions(
            self.index.big_names, ("domain", "registered-domain", "subdomain")
        )
        self._big_url_hosts = self._with_actions(self.index.big_names, ("url-host",))
        self._big_hashes = self._with_actions(self.index.big_hashes, ("hash",))
        self._age_matches = {
            t: Match(MAX_AGE, MAX_AGE, "age", DROP, f"last (else first) seen more than {format_age(age)} ago")
            for t in IocType
            if (age := self.max_age.age(t)) is not None
        }
        self._low_match = Match(MIN_CONFIDENCE, MIN_CONFIDENCE, "confidence", DROP, f"below {min_confidence}")

    def _with_actions(
        self, lists: list[tuple[int, set[str]]], kinds: tuple[str, ...]
    ) -> list[tuple[int, set[str], dict[str, str]]]:
        """Big lists with their action per match kind, leaving out those that report none of `kinds`."""
        result = []
        for list_id, values in lists:
            category = self._categories[list_id]
            actions = {kind: category.action_for(kind) for kind in MATCH_KINDS}
            if any(actions[kind] != IGNORE for kind in kinds):
                result.append((list_id, values, actions))
        return result

    # -- the policy over the index --

    def _resolve(self, set_id: int, kind: str) -> tuple[tuple[int, str], ...]:
        """(list id, action) of the lists of set `set_id` that report a match of `kind`."""
        key = (set_id, kind)
        found = self._resolved.get(key)
        if found is None:
            found = tuple(
                (list_id, action)
                for list_id in self.index.sets[set_id]
                if (action := self._categories[list_id].action_for(kind)) != IGNORE
            )
            self._resolved[key] = found
        return found

    def _match(self, list_id: int, kind: str, action: str, entry: str | None) -> Match:
        return Match(self.index.lists[list_id].name, self._categories[list_id].name, kind, action, entry)

    def _ip_matches(self, found: list[Match], version: int, value: int, kind: str) -> None:
        set_id = self._segments[version].lookup(value)
        if not set_id:
            return
        for list_id, action in self._resolve(set_id, kind):
            entry = self.index.ip_entry(list_id, version, value)
            category = self._categories[list_id]
            if category.name == SPECIAL_USE and self.index.lists[list_id].source == "foxhunt":
                address = ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
                entry = f"{entry} ({', '.join(special_use_properties(str(address))) or 'special purpose'})"
            found.append(self._match(list_id, kind, action, entry))

    def _name_matches(self, found: list[Match], name: str, in_url: bool) -> None:
        """Warninglist matches of a host name and each of its parents (big lists, whose entries have two
        labels or more, are not asked about the last label alone)."""
        names = self.index.names
        big = self._big_url_hosts if in_url else self._big_names
        start = 0
        while True:
            suffix = name[start:] if start else name
            dot = name.find(".", start)
            set_id = names.get(suffix)
            if set_id:
                kind = "url-host" if in_url else "subdomain" if start else self._exact_kind(name)
                for list_id, action in self._resolve(set_id, kind):
                    found.append(self._match(list_id, kind, action, suffix))
            if big and dot >= 0:
                for list_id, values, actions in big:
                    if suffix in values:
                        kind = "url-host" if in_url else "subdomain" if start else self._exact_kind(name)
                        if actions[kind] != IGNORE:
                            found.append(self._match(list_id, kind, actions[kind], suffix))
            if dot < 0:
                return
            start = dot + 1

    def _exact_kind(self, name: str) -> str:
        return "registered-domain" if is_registered_domain(name, self._psl) else "domain"

    def _allowed_name(self, name: str) -> str | None:
        domains = self.allowlist.domains
        start = 0
        while True:
            suffix = name[start:] if start else name
            if suffix in domains:
                return suffix
            dot = name.find(".", start)
            if dot < 0:
                return None
            start = dot + 1

    def _find(self, ioc: Ioc) -> list[Match] | None:
        """Every match of `ioc` (None when there is none: the common case, kept cheap)."""
        found: list[Match] = []
        ioc_type, value = ioc.ioc_type, ioc.value
        allowlist = self.allowlist
        allowed: str | None = None
        if ioc_type is _IP_PORT:
            try:  # the value is canonical (1.2.3.4:443, [2001:db8::1]:443): no ipaddress needed
                if value[0] == "[":
                    version, number = 6, _from_bytes(_pton(_AF_INET6, value[1 : value.rfind("]")]), "big")
                else:
                    version, number = 4, _from_bytes(_pton(_AF_INET, value[: value.rfind(":")]), "big")
            except (OSError, IndexError):
                version = 0  # not an ip:port value: nothing to look up
            if version:
                self._ip_matches(found, version, number, "ip")
                if allowlist.cidrs:
                    allowed = allowlist.ip_entry(version, number)
        elif ioc_type is _DOMAIN:
            self._name_matches(found, value, False)
            if allowlist.domains:
                allowed = self._allowed_name(value)
        elif ioc_type is _URL:
            host = url_host(value)
            parsed = parse_ip_int(host) if host[-1:].isdigit() or ":" in host else None
            if parsed is not None:
                self._ip_matches(found, *parsed, "url-host")
                if allowlist.cidrs:
                    allowed = allowlist.ip_entry(*parsed)
            else:
                self._name_matches(found, host, True)
                if allowlist.domains:
                    allowed = self._allowed_name(host)
            if self._url_prefixes and value.startswith(self._url_prefixes):
                for list_id, prefix in self.index.url_matches(value):
                    action = self._categories[list_id].action_for("url")
                    if action != IGNORE:
                        found.append(self._match(list_id, "url", action, prefix))
            if allowed is None and allowlist.urls:
                allowed = allowlist.url_entry(value)
        else:
            set_id = self.index.hashes.get(value)
            if set_id:
                for list_id, action in self._resolve(set_id, "hash"):
                    found.append(self._match(list_id, "hash", action, value))
            for list_id, values, actions in self._big_hashes:
                if value in values and actions["hash"] != IGNORE:
                    found.append(self._match(list_id, "hash", actions["hash"], value))
            if value in allowlist.hashes:
                allowed = value
        if self.index.regexes:
            self._regex_matches(found, ioc, _KIND_OF_TYPE[ioc_type])
        if allowed is not None:
            found.insert(0, Match(ALLOWLIST, ALLOWLIST, _KIND_OF_TYPE[ioc_type], DROP, allowed))
        return found or None

    def _selected_out(self, ioc: Ioc) -> Verdict | None:
        """The drop verdict of an IOC below --min-confidence or older than its max age, else None. Such
        an IOC is not looked up in the lists: its age or confidence is reason enough (and the check is
        the cheap part of a full dump, most of which is years old)."""
        cutoff = self._cutoffs[ioc.ioc_type]
        expired = False
        if cutoff is not None:
            seen = ioc.last_seen or ioc.first_seen
            if seen is not None:
                try:
                    expired = seen < cutoff
                except TypeError:  # a naive datetime: taken as UTC
                    expired = is_expired(ioc, cutoff)
        low = self.min_confidence is not None and (ioc.confidence or 0) < self.min_confidence
        if not (expired or low):
            return None
        if expired and low:
            return Verdict(
                ioc, DROP, (MIN_CONFIDENCE, MAX_AGE), (self._low_match, self._age_matches[ioc.ioc_type])
            )
        if expired:
            match = self._age_matches[ioc.ioc_type]
            return Verdict(ioc, DROP, _AGE_REASONS, (match,))
        return Verdict(ioc, DROP, _CONFIDENCE_REASONS, (self._low_match,))

    def _regex_matches(self, found: list[Match], ioc: Ioc, kind: str) -> None:
        for list_id, pattern, applies in self.index.regexes:
            if ioc.ioc_type in applies and pattern.search(ioc.value):
                action = self._categories[list_id].action_for(kind)
                if action != IGNORE:
                    found.append(self._match(list_id, kind, action, pattern.pattern))

    @staticmethod
    def _verdict(ioc: Ioc, found: list[Match]) -> Verdict:
        if len(found) == 1:
            match = found[0]
            return Verdict(ioc, match.action, (match.name,), (match,))
        verdict = max((m.action for m in found), key=SEVERITY.__getitem__)
        reasons = tuple(dict.fromkeys(m.name for m in found if m.action == verdict))
        return Verdict(ioc, verdict, reasons, tuple(found))

    # -- vetting --

    def vet(self, ioc: Ioc) -> Verdict:
        """The verdict of one IOC."""
        selected_out = self._selected_out(ioc)
        if selected_out is not None:
            return selected_out
        found = self._find(ioc)
        return self._verdict(ioc, found) if found else Verdict(ioc, KEEP)

    def vet_all(self, iocs: Iterable[Ioc]) -> VetResult:
        """Vet every IOC: the ones kept (in input order), the flagged ones' reasons, the dropped verdicts."""
        result = VetResult()
        kept, flagged, dropped = result.kept, result.flagged, result.dropped
        find, make, selected_out = self._find, self._verdict, self._selected_out
        was_enabled = gc.isenabled()
        gc.disable()  # verdicts form no cycles; the collector would rescan every kept object again and again
        try:
            for ioc in iocs:
                out = selected_out(ioc)
                if out is not None:
                    dropped.append(out)
                    continue
                found = find(ioc)
                if found is None:
                    kept.append(ioc)
                    continue
                verdict = make(ioc, found)
                if verdict.verdict == DROP:
                    dropped.append(verdict)
                    continue
                kept.append(ioc)
                if verdict.verdict == FLAG:
                    flagged[ioc.value] = verdict.reasons
        finally:
            if was_enabled:
                gc.enable()
        return result

    # -- explaining --

    def list_info(self, name: str) -> ListInfo | None:
        """The indexed list called `name` (None for allowlist, max-age, min-confidence or an unused list)."""
        return next((info for info in self.index.lists if info.name == name), None)

    def describe(self, reason: str) -> str:
        """What a reason name is, in a few words: ``public-dns-v4: List of known IPv4 public DNS
        resolvers (MISP warninglist, category public-dns)``."""
        if reason == ALLOWLIST:
            return f"the organisation's allowlist{f' ({self.allowlist.source})' if self.allowlist.source else ''}"
        if reason == MAX_AGE:
            return f"older than the maximum age of its type ({self.max_age.describe()})"
        if reason == MIN_CONFIDENCE:
            return f"ThreatFox confidence below {self.min_confidence}"
        info = self.list_info(reason)
        title = info.title if info else reason
        source = "MISP warninglist" if info is None or info.source == "misp" else "foxhunt builtin list"
        return f"{reason}: {title} ({source}, category {self.policy.category_of(reason).name})"

    def category_of(self, reason: str) -> Category | None:
        """The policy category of a list reason (None for allowlist, max-age, min-confidence)."""
        if reason in (ALLOWLIST, MAX_AGE, MIN_CONFIDENCE):
            return None
        return self.policy.category_of(reason)

    def note(self, verdict: Verdict) -> str:
        """A short sentence for a flagged or dropped IOC: ``flagged: shared-hosting (lots-project), ...``.

        Kept per (verdict, reasons): a list's category is fixed, so a million IOCs dropped for their
        age share one note."""
        if verdict.verdict == KEEP:
            return ""
        key = (verdict.verdict, verdict.reasons)
        note = self._notes.get(key)
        if note is None:
            groups: dict[str, list[str]] = {}
            for match in verdict.matches:
                if match.action == verdict.verdict:
                    names = groups.setdefault(match.category, [])
                    if match.name not in names:
                        names.append(match.name)
            listed = "; ".join(f"{category} ({', '.join(names)})" for category, names in groups.items())
            note = self._notes[key] = f"{'flagged' if verdict.verdict == FLAG else 'dropped'}: {listed}"
        return note


_KIND_OF_TYPE = {
    IocType.IP_PORT: "ip",
    IocType.DOMAIN: "domain",
    IocType.URL: "url",
    IocType.MD5: "hash",
    IocType.SHA1: "hash",
    IocType.SHA256: "hash",
}
