"""Allowlist exclusions: a small, checked subset of KQL boolean expressions, compiled to DuckDB SQL too.

An exclusion is written in KQL (it goes verbatim into ``| where not(...)`` of every emitted query of
its table) and has to run in `foxhunt hunt` as well, which queries log exports on DuckDB. So it is
parsed here, against the columns and types of its table, and compiled to SQL with Kusto's semantics:

    expr       := and ("or" and)*
    and        := unary ("and" unary)*
    unary      := "not" "(" expr ")" | "(" expr ")" | test
    test       := value OP literal | value ["!"]("in" | "in~") "(" literal, ... ")"
                | value "has_any" "(" literal, ... ")" | value ["!"]"between" "(" number ".." number ")"
                | isempty(col) | isnotempty(col) | isnull(col) | isnotnull(col)
                | ipv4_is_in_range(col, "cidr") | ipv4_is_in_any_range(col, "cidr", ...) | ipv4_is_private(col)
                | a bool column
    value      := column | tolower(column) | toupper(column)
    OP         := == != =~ !~ < <= > >= | [!]has[_cs] [!]contains[_cs] [!]startswith[_cs] [!]endswith[_cs]
                | matches regex

Literals are strings (``"..."``, ``'...'``, ``@"..."``), numbers and true/false. As in Kusto, a string
column is never null (a missing one is empty), a number column that is empty or not a number is null,
and comparisons are two-valued: a missing value makes ``==``, ``<``, ``in``, ``has``, ``between``...
false and ``!=``, ``!in``, ``!has``... true (``!between`` false), as duckdb-kql does (the tests compare). The ipv4 functions are null for a value that is not an
IPv4 address, and a null exclusion counts as false (``coalesce(..., false)`` in `Allowlist.kql_filter`
and `Allowlist.sql_filter`), so an exclusion never hides a row it cannot evaluate.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

STRING_TYPES = frozenset({"string", "guid", "dynamic"})
NUMBER_TYPES = frozenset({"int", "long", "real", "decimal"})

_STRING_OPS = (
    "has",
    "has_cs",
    "contains",
    "contains_cs",
    "startswith",
    "startswith_cs",
    "endswith",
    "endswith_cs",
)
_WORD_OPS = frozenset({*_STRING_OPS, *(f"!{op}" for op in _STRING_OPS), "in", "!in", "in~", "!in~", "has_any",
                       "between", "!between", "matches"})  # fmt: skip
_SYMBOL_OPS = ("==", "!=", "=~", "!~", "<=", ">=", "<", ">")
_BOOL_FUNCTIONS = frozenset(
    {
        "isempty",
        "isnotempty",
        "isnull",
        "isnotnull",
        "ipv4_is_in_range",
        "ipv4_is_in_any_range",
        "ipv4_is_private",
    }
)
_PRIVATE_V4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
_IPV4_TEXT = (
    r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$"
)
_TOKEN = re.compile(
    r"""\s+|//[^\n]*
    |(?P<string>@"(?:[^"]|"")*"|@'(?:[^']|'')*'|[hH]?"(?:[^"\\\n]|\\.)*"|[hH]?'(?:[^'\\\n]|\\.)*')
    |(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![A-Za-z_]))
    |(?P<word>!?[A-Za-z_][A-Za-z0-9_]*~?)
    |(?P<symbol>==|!=|=~|!~|<=|>=|\.\.|[<>(),])""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


def _yes(test: str) -> str:
    """A test that is false, not null, when a value is missing (Kusto's comparisons are two-valued)."""
    return f"coalesce({test}, false)"


def _no(test: str) -> str:
    """The negation of a test, true when a value is missing (``null != 443`` is true in Kusto)."""
    return f"(NOT coalesce({test}, false))"


class ExpressionError(ValueError):
    """An exclusion outside the supported KQL subset, or naming a column its table does not have."""


@dataclass(frozen=True, slots=True)
class Exclusion:
    """One exclusion of one table: its KQL (as written, white space folded), its DuckDB SQL (over a log
    relation whose columns are text, as in `foxhunt hunt`), and the columns it reads."""

    table: str
    kql: str
    sql: str
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    position: int


class _Tokens:
    """The tokens of an expression, read as the parser asks for them (so the first mistake is reported)."""

    def __init__(self, text: str) -> None:
        self.text, self.read, self.end = text, [], 0

    def get(self, index: int) -> _Token | None:
        while len(self.read) <= index:
            token = self._scan()
            if token is None:
                return None
            self.read.append(token)
        return self.read[index]

    def _scan(self) -> _Token | None:
        text = self.text
        while self.end < len(text):
            match = _TOKEN.match(text, self.end)
            if match is None:
                rest = text[self.end :]
                if rest.startswith("```"):
                    raise ExpressionError("multi-line ``` strings are not supported")
                if rest[0] in "\"'@":
                    raise ExpressionError(f"unterminated string at {rest[:20]!r}")
                if rest[0] in "|;":
                    raise ExpressionError(
                        f"{rest[0]!r} is not allowed: an exclusion is one boolean expression"
                    )
                raise ExpressionError(f"unexpected {rest[:10]!r}")
            self.end = match.end()
            if match.lastgroup:
                return _Token(match.lastgroup, match.group(), match.start())
        return None


def _string_value(token: str) -> str:
    if token[0] == "@":
        quote = token[1]
        return token[2:-1].replace(quote * 2, quote)
    body = token[2:-1] if token[0] in "hH" else token[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class _Value:
    """A column as an operand: its SQL text and Kusto type."""

    sql: str
    type: str
    column: str


class _Parser:
    def __init__(self, text: str, columns: dict[str, str]) -> None:
        self.tokens = _Tokens(text)
        self.position = 0
        self.columns = columns
        self.used: dict[str, None] = {}

    # -- tokens --

    def peek(self, offset: int = 0) -> _Token | None:
        return self.tokens.get(self.position + offset)

    def next(self, what: str) -> _Token:
        token = self.peek()
        if token is None:
            if what == "')'":
                raise ExpressionError("unclosed '('")
            raise ExpressionError(f"the expression ends where {what} should follow")
        self.position += 1
        return token

    def expect(self, text: str) -> None:
        token = self.next(repr(text))
        if token.text != text:
            raise ExpressionError(f"expected {text!r}, found {token.text!r}")

    def at(self, text: str) -> bool:
        token = self.peek()
        return token is not None and token.text == text

    # -- grammar --

    def parse(self) -> str:
        if self.peek() is None:
            raise ExpressionError("empty expression")
        sql = self.expr()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek().text!r} after a complete expression")  # type: ignore[union-attr]
        return sql

    def expr(self) -> str:
        parts = [self.conjunction()]
        while self.at("or"):
            self.position += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def conjunction(self) -> str:
        parts = [self.unary()]
        while self.at("and"):
            self.position += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def unary(self) -> str:
        if self.at("not"):
            self.position += 1
            self.expect("(")
            inner = self.expr()
            self.expect(")")
            return f"(NOT {inner})"
        if self.at("("):
            self.position += 1
            inner = self.expr()
            self.expect(")")
            return inner
        return self.test()

    def test(self) -> str:
        token = self.peek()
        if token is not None and token.text in _BOOL_FUNCTIONS:
            return self.bool_function()
        value = self.value()
        following = self.peek()
        if following is None or following.text in ("and", "or", ")"):
            if value.type != "bool":
                raise ExpressionError(
                    f"{value.column} is {value.type}, not a condition: compare it with a value"
                )
            return _yes(f"{value.sql} = true")
        operator = self.next("an operator").text
        if operator == "matches":
            self.expect("regex")
            pattern = self.string_literal("a regular expression")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ExpressionError(f"bad regular expression {pattern!r}: {exc}") from None
            return _yes(f"regexp_matches({self.text_of(value)}, {sql_string(pattern)})")
        if operator in _SYMBOL_OPS:
            return self.comparison(value, operator)
        if operator in ("in", "!in", "in~", "!in~", "has_any"):
            return self.membership(value, operator)
        if operator in ("between", "!between"):
            return self.between(value, operator)
        if operator.lstrip("!") in _STRING_OPS:
            return self.string_test(value, operator)
        raise ExpressionError(f"unsupported operator {operator!r}")

    def value(self) -> _Value:
        token = self.next("a column")
        if token.text in ("tolower", "toupper"):
            self.expect("(")
            inner = self.column()
            self.expect(")")
            if inner.type not in STRING_TYPES:
                raise ExpressionError(f"{token.text}() needs a string column; {inner.column} is {inner.type}")
            return _Value(
                f"{'lower' if token.text == 'tolower' else 'upper'}({inner.sql})", "string", inner.column
            )
        self.position -= 1
        return self.column()

    def column(self) -> _Value:
        token = self.next("a column")
        if token.kind != "word" or self.at("("):
            raise ExpressionError(f"expected a column of the table, found {token.text!r}")
        name = token.text
        kusto_type = self.columns.get(name)
        if kusto_type is None:
            raise ExpressionError(f"{name!r} is not a column of the table")
        self.used[name] = None
        if kusto_type in NUMBER_TYPES:
            return _Value(f"TRY_CAST({_ident(name)} AS DOUBLE)", "number", name)
        if kusto_type == "bool":
            return _Value(f"TRY_CAST({_ident(name)} AS BOOLEAN)", "bool", name)
        if kusto_type == "datetime":
            return _Value(_ident(name), "datetime", name)
        return _Value(f"coalesce(CAST({_ident(name)} AS VARCHAR), '')", "string", name)

    def literal(self) -> tuple[str, object]:
        token = self.next("a value")
        if token.kind == "string":
            return "string", _string_value(token.text)
        if token.kind == "number":
            return "number", float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
        if token.text in ("true", "false"):
            return "bool", token.text == "true"
        raise ExpressionError(f"expected a string, number or true/false, found {token.text!r}")

    def string_literal(self, what: str) -> str:
        kind, value = self.literal()
        if kind != "string":
            raise ExpressionError(f"expected {what} as a string")
        return str(value)

    def literals(self) -> list[tuple[str, object]]:
        self.expect("(")
        values = [self.literal()]
        while self.at(","):
            self.position += 1
            values.append(self.literal())
        self.expect(")")
        return values

    @staticmethod
    def text_of(value: _Value) -> str:
        if value.type != "string":
            raise ExpressionError(f"{value.column} is {value.type}: string operators need a string column")
        return value.sql

    @staticmethod
    def sql_literal(kind: str, literal: object) -> str:
        if kind == "string":
            return sql_string(str(literal))
        if kind == "bool":
            return "true" if literal else "false"
        return repr(literal)

    def check_type(self, value: _Value, kind: str) -> None:
        expected = {"string": "string", "number": "number", "bool": "bool"}[kind]
        if value.type != expected:
            raise ExpressionError(
                f"{value.column} is {value.type}: compare it with a {value.type} value, not a {kind}"
            )

    def comparison(self, value: _Value, operator: str) -> str:
        kind, literal = self.literal()
        self.check_type(value, kind)
        if operator in ("=~", "!~"):
            if kind != "string":
                raise ExpressionError(f"{operator} compares strings")
            test = f"lower({value.sql}) = lower({sql_string(str(literal))})"
            return _yes(test) if operator == "=~" else _no(test)
        if operator in ("<", "<=", ">", ">=") and kind != "number":
            raise ExpressionError(f"{operator} compares numbers")
        if operator == "!=":
            return _no(f"{value.sql} = {self.sql_literal(kind, literal)}")
        return _yes(f"{value.sql} {'=' if operator == '==' else operator} {self.sql_literal(kind, literal)}")

    def membership(self, value: _Value, operator: str) -> str:
        literals = self.literals()
        for kind, _ in literals:
            self.check_type(value, kind)
        if operator == "has_any":
            return "(" + " OR ".join(self.has(value, str(v), case_sensitive=False) for _, v in literals) + ")"
        folded = operator.endswith("~")
        if folded and value.type != "string":
            raise ExpressionError(f"{operator} compares strings")
        subject = f"lower({value.sql})" if folded else value.sql
        items = ", ".join(
            f"lower({self.sql_literal(k, v)})" if folded else self.sql_literal(k, v) for k, v in literals
        )
        test = f"{subject} IN ({items})"
        return _no(test) if operator.startswith("!") else _yes(test)

    def between(self, value: _Value, operator: str) -> str:
        if value.type != "number":
            raise ExpressionError(f"between needs a number column; {value.column} is {value.type}")
        self.expect("(")
        low_kind, low = self.literal()
        self.expect("..")
        high_kind, high = self.literal()
        self.expect(")")
        if low_kind != "number" or high_kind != "number":
            raise ExpressionError("between takes numbers: (low .. high)")
        test = f"{value.sql} BETWEEN {low!r} AND {high!r}"
        return _yes(f"NOT ({test})") if operator.startswith("!") else _yes(test)  # a null is in no range

    @staticmethod
    def has(value: _Value, term: str, *, case_sensitive: bool) -> str:
        """Kusto's `has`: the term, not inside a longer alphanumeric run."""
        flags = "" if case_sensitive else "(?i)"
        pattern = f"{flags}(^|[^[:alnum:]]){re.escape(term)}($|[^[:alnum:]])"
        return _yes(f"regexp_matches({value.sql}, {sql_string(pattern)})")

    def string_test(self, value: _Value, operator: str) -> str:
        subject = self.text_of(value)
        term = self.string_literal(f"the operand of {operator}")
        negated, name = operator.startswith("!"), operator.lstrip("!")
        base, case_sensitive = name.removesuffix("_cs"), name.endswith("_cs")
        if base == "has":
            test = self.has(value, term, case_sensitive=case_sensitive)
        else:
            function = {"contains": "contains", "startswith": "starts_with", "endswith": "ends_with"}[base]
            if case_sensitive:
                test = f"{function}({subject}, {sql_string(term)})"
            else:
                test = f"{function}(lower({subject}), lower({sql_string(term)}))"
        return _no(test) if negated else _yes(test)

    def bool_function(self) -> str:
        name = self.next("a function").text
        self.expect("(")
        value = self.column()
        if name in ("isempty", "isnotempty", "isnull", "isnotnull"):
            self.expect(")")
            raw = _ident(value.column)
            if name in ("isnull", "isnotnull") and value.type == "string":
                return "false" if name == "isnull" else "true"  # a Kusto string is never null
            if value.type == "string":
                empty = f"({raw} IS NULL OR CAST({raw} AS VARCHAR) = '')"
            else:
                empty = f"({value.sql} IS NULL)"
            return empty if name in ("isempty", "isnull") else f"(NOT {empty})"
        if value.type != "string":
            raise ExpressionError(f"{name}() needs a string column; {value.column} is {value.type}")
        ranges: list[str] = list(_PRIVATE_V4) if name == "ipv4_is_private" else []
        while self.at(","):
            self.position += 1
            ranges.append(self.string_literal("an IPv4 range"))
        self.expect(")")
        if name == "ipv4_is_in_range" and len(ranges) != 1:
            raise ExpressionError('ipv4_is_in_range(column, "a.b.c.d/n") takes one range')
        if name == "ipv4_is_in_any_range" and not ranges:
            raise ExpressionError('ipv4_is_in_any_range(column, "a.b.c.d/n", ...) needs a range')
        if name == "ipv4_is_private" and len(ranges) != len(_PRIVATE_V4):
            raise ExpressionError("ipv4_is_private(column) takes only the column")
        return self.ipv4_ranges(value, ranges)

    @staticmethod
    def ipv4_ranges(value: _Value, ranges: list[str]) -> str:
        bounds = []
        for text in ranges:
            try:
                network = ipaddress.IPv4Network(text, strict=False)
            except ValueError as exc:
                raise ExpressionError(f"not an IPv4 address or range: {text!r} ({exc})") from None
            bounds.append((int(network.network_address), int(network.broadcast_address)))
        parts = [f"split_part({value.sql}, '.', {n})" for n in (1, 2, 3, 4)]
        number = (
            "(" + " + ".join(f"TRY_CAST({p} AS BIGINT) * {256 ** (3 - i)}" for i, p in enumerate(parts)) + ")"
        )
        within = " OR ".join(f"{number} BETWEEN {low} AND {high}" for low, high in bounds)
        return f"(CASE WHEN regexp_matches({value.sql}, {sql_string(_IPV4_TEXT)}) THEN ({within}) END)"


def parse_exclusion(text: str, table: str, columns: dict[str, str]) -> Exclusion:
    """Check one exclusion of `table` (`columns`: name -> Kusto type, on every platform) and compile it."""
    kql = " ".join(text.split())
    parser = _Parser(kql, columns)
    sql = parser.parse()
    return Exclusion(table=table, kql=kql, sql=sql, columns=tuple(parser.used))
