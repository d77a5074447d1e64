"""The vetting policy: warninglist -> category -> action (drop, flag, ignore), as data.

The packaged policy is `policy.yaml` next to this module (it documents every key); a user policy file
has the same keys and is merged over it by `load_policy(path)`. Mistakes raise `PolicyError` naming
``file:line``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from yaml.nodes import Node

from foxhunt.normalize import normalize_domain, normalize_url
from foxhunt.vetting.yamlnodes import (
    ConfigError,
    check_keys,
    compose,
    line_of,
    mapping,
    read_text,
    sequence,
    string,
)

DROP, FLAG, IGNORE, KEEP = "drop", "flag", "ignore", "keep"
ACTIONS: tuple[str, ...] = (DROP, FLAG, IGNORE)
#: How bad an action is; the verdict of an IOC is its worst match.
SEVERITY: Mapping[str, int] = MappingProxyType({IGNORE: 0, KEEP: 0, FLAG: 1, DROP: 2})

#: Match kinds a category can give its own action (`on:`), with what each means.
MATCH_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "ip": "the IP of an ip:port IOC is in a listed range",
        "domain": "a domain IOC is a listed name",
        "registered-domain": "a domain IOC is a listed name and a registered domain itself",
        "subdomain": "a domain IOC is under a listed name",
        "url-host": "the host of a URL IOC is a listed name, under one, or an IP in a listed range",
        "url": "a URL IOC starts with a listed URL",
        "hash": "a hash IOC is listed",
    }
)
#: Builtin list types: cidr (addresses and ranges), hostname (a name and everything under it), hash, url
#: (a URL prefix).
BUILTIN_TYPES: tuple[str, ...] = ("cidr", "hostname", "hash", "url")

_POLICY_FILE = "policy.yaml"
_HASH_RE = re.compile(r"[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}")
_TOP_KEYS = ("default_category", "categories", "lists", "builtin_lists")
_CATEGORY_KEYS = ("description", "action", "on")
_BUILTIN_KEYS = ("description", "category", "type", "entries")


class PolicyError(ConfigError):
    """A policy file with a mistake (the message names file and line)."""


@dataclass(frozen=True, slots=True)
class Category:
    """A kind of warninglist and what a match on it does (`on` overrides `action` per match kind)."""

    name: str
    description: str
    action: str
    on: Mapping[str, str] = field(default_factory=dict)

    def action_for(self, kind: str) -> str:
        """The action for a match of `kind` (``registered-domain`` falls back to ``domain``)."""
        if kind in self.on:
            return self.on[kind]
        if kind == "registered-domain" and "domain" in self.on:
            return self.on["domain"]
        return self.action

    @property
    def inert(self) -> bool:
        """True when no match of any kind is reported (its lists need not be indexed)."""
        return self.action == IGNORE and all(a == IGNORE for a in self.on.values())


@dataclass(frozen=True, slots=True)
class BuiltinList:
    """A list shipped in the policy data itself (checked like a MISP warninglist)."""

    name: str
    description: str
    category: str
    type: str
    entries: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """Categories, the category of each warninglist, and the builtin lists."""

    categories: Mapping[str, Category]
    lists: Mapping[str, str]
    default_category: str
    builtin_lists: Mapping[str, BuiltinList]
    sources: tuple[str, ...] = ()

    def category_of(self, list_name: str) -> Category:
        """The category of `list_name`: as named in `lists`, else a builtin list's own, else
        `default_category` (a list the policy does not know)."""
        name = self.lists.get(list_name)
        if name is None:
            builtin = self.builtin_lists.get(list_name)
            name = builtin.category if builtin else self.default_category
        return self.categories[name]

    def action(self, list_name: str, kind: str) -> str:
        return self.category_of(list_name).action_for(kind)


# ---- loading ------------------------------------------------------------------------------------


@dataclass
class _Draft:
    """A policy being assembled from the packaged file and a user file, with where each value came from."""

    default_category: tuple[str, str, int] | None = None  # (value, source, line)
    categories: dict[str, dict] = field(default_factory=dict)
    lists: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    builtin_lists: dict[str, tuple[BuiltinList, str, int]] = field(default_factory=dict)


def _action(node: Node, source: str, what: str) -> str:
    value = string(node, source, PolicyError, what)
    if value not in ACTIONS:
        raise PolicyError(source, line_of(node), f"{what}: {value!r} is not one of {', '.join(ACTIONS)}")
    return value


def _merge_category(draft: _Draft, name: str, node: Node, source: str) -> None:
    what = f"category {name!r}"
    items = mapping(node, source, PolicyError, what)
    check_keys(items, _CATEGORY_KEYS, source, PolicyError, what)
    current = draft.categories.setdefault(name, {"on": {}, "line": line_of(node), "source": source})
    for key, _, value in items:
        if key == "description":
            current["description"] = string(value, source, PolicyError, f"{what} description")
        elif key == "action":
            current["action"] = _action(value, source, f"{what} action")
        else:
            for kind, kind_node, action in mapping(value, source, PolicyError, f"{what} on"):
                if kind not in MATCH_KINDS:
                    raise PolicyError(
                        source, line_of(kind_node),
                        f"{what} on: unknown match kind {kind!r} (expected one of {', '.join(MATCH_KINDS)})",
                    )  # fmt: skip
                current["on"][kind] = _action(action, source, f"{what} on {kind}")
    if "action" not in current:
        raise PolicyError(source, line_of(node), f"new {what} needs an action ({', '.join(ACTIONS)})")


def _builtin(name: str, node: Node, source: str) -> BuiltinList:
    what = f"builtin list {name!r}"
    items = mapping(node, source, PolicyError, what)
    check_keys(items, _BUILTIN_KEYS, source, PolicyError, what)
    values = {key: value for key, _, value in items}
    for required in _BUILTIN_KEYS:
        if required not in values:
            raise PolicyError(source, line_of(node), f"{what} needs {required!r}")
    list_type = string(values["type"], source, PolicyError, f"{what} type")
    if list_type not in BUILTIN_TYPES:
        raise PolicyError(
            source,
            line_of(values["type"]),
            f"{what} type: {list_type!r} is not one of {', '.join(BUILTIN_TYPES)}",
        )
    entries = tuple(
        _entry(string(entry, source, PolicyError, f"{what} entry"), list_type, entry, source, what)
        for entry in sequence(values["entries"], source, PolicyError, f"{what} entries")
    )
    return BuiltinList(
        name=name,
        description=string(values["description"], source, PolicyError, f"{what} description"),
        category=string(values["category"], source, PolicyError, f"{what} category"),
        type=list_type,
        entries=entries,
    )


def _entry(text: str, list_type: str, node: Node, source: str, what: str) -> str:
    """A builtin list entry, checked against its list's type (the index takes it as written)."""
    value = text.strip()
    try:
        if list_type == "cidr":
            ipaddress.ip_network(value, strict=False)
        elif list_type == "hostname":
            normalize_domain(value.lstrip("*").lstrip("."), min_labels=1)
        elif list_type == "url":
            normalize_url(value)
        elif not _HASH_RE.fullmatch(value.lower()):
            raise ValueError("not an MD5, SHA-1 or SHA-256 (32, 40 or 64 hex characters)")
    except ValueError as exc:  # InvalidIoc is a ValueError
        raise PolicyError(source, line_of(node), f"{what}: bad {list_type} entry {text!r}: {exc}") from None
    return value


def _merge_file(draft: _Draft, text: str, source: str) -> None:
    root = compose(text, source, PolicyError)
    if root is None:
        return
    items = mapping(root, source, PolicyError, "policy")
    check_keys(items, _TOP_KEYS, source, PolicyError, "policy")
    for key, _, value in items:
        if key == "default_category":
            draft.default_category = (string(value, source, PolicyError, key), source, line_of(value))
        elif key == "categories":
            for name, _, node in mapping(value, source, PolicyError, "categories"):
                _merge_category(draft, name, node, source)
        elif key == "lists":
            for name, name_node, node in mapping(value, source, PolicyError, "lists"):
                draft.lists[name] = (
                    string(node, source, PolicyError, f"list {name!r}"),
                    source,
                    line_of(name_node),
                )
        else:
            for name, name_node, node in mapping(value, source, PolicyError, "builtin_lists"):
                draft.builtin_lists[name] = (_builtin(name, node, source), source, line_of(name_node))


def _finish(draft: _Draft, known_lists: frozenset[str], sources: tuple[str, ...]) -> Policy:
    categories = {
        name: Category(name, raw.get("description", ""), raw["action"], MappingProxyType(dict(raw["on"])))
        for name, raw in draft.categories.items()
    }
    if draft.default_category is None:
        raise PolicyError(sources[0], None, "no default_category")
    default, source, line = draft.default_category
    if default not in categories:
        raise PolicyError(source, line, f"default_category: unknown category {default!r}")
    for builtin, source, line in draft.builtin_lists.values():
        if builtin.category not in categories:
            raise PolicyError(
                source, line, f"builtin list {builtin.name!r}: unknown category {builtin.category!r}"
            )
        if builtin.name in known_lists:
            raise PolicyError(
                source, line, f"builtin list {builtin.name!r} has the name of a MISP warninglist"
            )
    names = known_lists | draft.builtin_lists.keys()
    for list_name, (category, source, line) in draft.lists.items():
        if category not in categories:
            raise PolicyError(source, line, f"list {list_name!r}: unknown category {category!r}")
        packaged = source == sources[0]
        if list_name not in names and not packaged:  # the packaged file may name lists a newer data set drops
            raise PolicyError(
                source,
                line,
                f"unknown warninglist {list_name!r}: neither a MISP list of pymispwarninglists nor a builtin list",
            )
    return Policy(
        categories=MappingProxyType(categories),
        lists=MappingProxyType({name: value[0] for name, value in draft.lists.items()}),
        default_category=default,
        builtin_lists=MappingProxyType({name: value[0] for name, value in draft.builtin_lists.items()}),
        sources=sources,
    )


def packaged_policy_text() -> str:
    return resources.files("foxhunt.vetting").joinpath(_POLICY_FILE).read_text(encoding="utf-8")


def load_policy(path: str | Path | None = None) -> Policy:
    """The packaged policy, with the user's policy file at `path` merged over it."""
    from foxhunt.vetting.warninglists import available_lists  # the list names, without loading the lists

    draft = _Draft()
    sources = [f"foxhunt/vetting/{_POLICY_FILE}"]
    _merge_file(draft, packaged_policy_text(), sources[0])
    if path is not None:
        sources.append(str(path))
        _merge_file(draft, read_text(path, PolicyError), str(path))
    return _finish(draft, available_lists(), tuple(sources))
