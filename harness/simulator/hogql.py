"""A small HogQL subset for the simulated PostHog query API: tokenizer, parser, compiler, executor.

Enough for an importer that pages through `events` / `posthog.ai_events` with keyset
pagination; anything else is a 400 (`HogQLError`) that names what is not supported, so a
client never gets a silently different answer. Grammar (keywords in any case):

    query    := SELECT item (',' item)* FROM table [[AS] alias] [WHERE expr]
                [ORDER BY expr [ASC|DESC] (',' ...)*] [LIMIT n] [';']
    item     := expr [[AS] name] | count() [[AS] name]
    table    := events | posthog.ai_events
    expr     := expr OR expr | expr AND expr | NOT expr
              | operand (= | == | != | <> | < | <= | > | >=) operand
              | operand [NOT] IN (literal, ...) | operand IS [NOT] NULL | '(' expr ')'
    operand  := column | column.key.key... | column['key']... | '(' operand, operand, ... ')'
              | 'string' | number | NULL | true | false | {placeholder}
              | JSONExtractRaw(column, 'key', ...) | toString(operand)
              | toDateTime('YYYY-MM-DD hh:mm:ss'[, 'tz']) | toDateTime64('...', precision[, 'tz'])

Semantics, following HogQL on ClickHouse where the simulator can tell:

- Columns may be qualified by the table name or alias (`events.uuid`, `ai_events.input`).
- `properties.$x` / `properties['$x']` is HogQL's property access: the property's JSON text
  with a leading and a trailing double quote removed (so a string comes back unquoted but
  still JSON-escaped, an object or array as compact JSON text), NULL when missing or null;
  type `Nullable(String)`. `JSONExtractRaw(properties, '$x')` is the raw JSON text ('' when
  missing). The `properties` column itself is the JSON text of all properties.
- `timestamp` is returned in the project's timezone (`DateTime64(6, '<tz>')`; the API
  renders it as ISO 8601 with the offset). A string compared with it is read as local time
  in the project's timezone, in ClickHouse's basic form 'YYYY-MM-DD[ hh:mm:ss[.ffffff]]'; a
  string with an offset or `Z` is rejected (write `toDateTime64('...', 6, 'UTC')`).
- `uuid` compares and sorts as ClickHouse's UUID does: by its second half, then its first.
- NULL in a comparison is NULL (the row is not kept); NULLs sort last.
- No `LIMIT`: 100 rows and `hasMore`; `LIMIT n`: at most 50,000 rows, `hasMore` null.
  `OFFSET` is refused as PostHog refuses it for personal API keys.
- Without `ORDER BY` the order is a fixed scramble (ClickHouse promises none).
"""

from __future__ import annotations

import re
import uuid as uuidlib
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

__all__ = [
    "DEFAULT_RETURNED_ROWS",
    "MAX_SELECT_RETURNED_ROWS",
    "OFFSET_NOT_ALLOWED_MESSAGE",
    "Column",
    "HogQLError",
    "QueryResult",
    "Table",
    "ch_uuid_key",
    "hogql_property_text",
    "json_text",
    "parse_query",
    "run_query",
]

DEFAULT_RETURNED_ROWS = 100  # PostHog: a SELECT without LIMIT, through the API
MAX_SELECT_RETURNED_ROWS = 50_000  # PostHog: the cap on any LIMIT
OFFSET_NOT_ALLOWED_MESSAGE = (
    "OFFSET is not supported on queries made with a personal API key. "
    "For pagination, use keyset pagination on the `timestamp` column, e.g. "
    "`WHERE timestamp > :last_seen_timestamp ORDER BY timestamp LIMIT N`. "
    "For bulk data extraction, use batch exports: https://posthog.com/docs/cdp/batch-exports"
)

Row = Mapping[str, Any]


class HogQLError(Exception):
    """A query PostHog would answer with 400: `code` as in its error body, `message` the detail."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _syntax(message: str, pos: int) -> HogQLError:
    return HogQLError("hogql_syntax_error", f"Syntax error at position {pos}: {message}")


def _unsupported(what: str) -> HogQLError:
    return HogQLError(
        "hogql_query_error",
        f"Unsupported by the simulator's HogQL subset: {what} (see harness/simulator/hogql.py)",
    )


# -- schema -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """`kind`: uuid | string | datetime | number. `json`: its text holds JSON (path access works;
    the parsed value is in the row under `name + "#obj"`). `ch_type` may contain `{tz}`."""

    name: str
    kind: str
    ch_type: str
    json: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    name: str  # as written after FROM
    qualifiers: frozenset[str]  # names a column may be qualified with besides an alias
    columns: Mapping[str, Column]


# -- values ---------------------------------------------------------------------------------


def json_text(value: Any) -> str:
    """Compact JSON text, as ClickHouse's JSONExtractRaw and PostHog's stored properties."""
    return orjson.dumps(value).decode()


def hogql_property_text(value: Any) -> str | None:
    """HogQL `properties.x`: replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(...), ''), 'null'), '^"|"$', '')."""
    if value is None:
        return None
    text = json_text(value)
    if text.startswith('"'):
        text = text[1:]
    if text.endswith('"'):
        text = text[:-1]
    return text


def ch_uuid_key(value: str) -> tuple[int, int]:
    """ClickHouse orders UUIDs by their second half, then their first."""
    raw = uuidlib.UUID(value).int
    return (raw & 0xFFFF_FFFF_FFFF_FFFF, raw >> 64)


_MISSING = object()


def _walk(value: Any, path: Sequence[str | int]) -> Any:
    for key in path:
        if isinstance(key, int) and isinstance(value, list):
            # HogQL array indexes are 1-based
            if not 1 <= key <= len(value):
                return _MISSING
            value = value[key - 1]
        elif isinstance(value, dict) and str(key) in value:
            value = value[str(key)]
        else:
            return _MISSING
    return value


# -- tokens -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # word | qword | string | number | op | placeholder | eof
    value: Any
    pos: int


_SCAN = re.compile(
    r"""(?P<ws>\s+|--[^\n]*)
      |(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      |(?P<word>[A-Za-z_$][A-Za-z0-9_$]*)
      |(?P<placeholder>\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\})
      |(?P<op><=|>=|!=|<>|==|[=<>(),.\[\]*;+\-/%])""",
    re.VERBOSE,
)
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "0": "\0",
    "b": "\b",
    "f": "\f",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "`": "`",
}


def _quoted(text: str, start: int) -> tuple[str, int]:
    """A quoted string or identifier from `start` (the opening quote); returns (value, end)."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
        elif ch == quote:
            if text[i + 1 : i + 2] == quote:  # doubled quote
                out.append(quote)
                i += 2
            else:
                return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise _syntax("unterminated quoted text", start)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            value, i2 = _quoted(text, i)
            tokens.append(Token("string", value, i))
            i = i2
            continue
        if ch in '`"':
            value, i2 = _quoted(text, i)
            tokens.append(Token("qword", value, i))
            i = i2
            continue
        m = _SCAN.match(text, i)
        if m is None:
            raise _syntax(f"unexpected character {ch!r}", i)
        kind = m.lastgroup or ""
        if kind == "number":
            raw = m.group()
            tokens.append(Token("number", float(raw) if any(c in raw for c in ".eE") else int(raw), i))
        elif kind == "placeholder":
            tokens.append(Token("placeholder", m.group()[1:-1].strip(), i))
        elif kind != "ws":
            tokens.append(Token(kind, m.group(), i))
        i = m.end()
    tokens.append(Token("eof", None, len(text)))
    return tokens


# -- AST ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Const:
    value: Any


@dataclass(frozen=True, slots=True)
class Field:
    chain: tuple[str | int, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Any, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class TupleExpr:
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True, slots=True)
class InList:
    left: Any
    items: tuple[Any, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class IsNull:
    operand: Any
    negated: bool


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # and | or
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Not:
    operand: Any


@dataclass(frozen=True, slots=True)
class SelectItem:
    expr: Any
    alias: str | None


@dataclass(frozen=True, slots=True)
class Query:
    select: tuple[SelectItem, ...]
    table: str
    alias: str | None
    where: Any
    order: tuple[tuple[Any, bool], ...]  # (expr, descending)
    limit: int | None


_KEYWORDS = {
    "select", "from", "where", "and", "or", "not", "order", "by", "limit", "offset", "as", "in",
    "is", "null", "asc", "desc", "group", "having", "join", "union", "with", "distinct", "sample",
    "settings", "format", "left", "right", "inner", "outer", "full", "cross", "array", "prewhere",
    "qualify", "window", "on", "using", "between", "like", "ilike", "case", "interval", "nulls",
    "true", "false", "all", "any",
}  # fmt: skip
_NOT_SUPPORTED_CLAUSES = {
    "group": "GROUP BY", "having": "HAVING", "join": "JOIN", "left": "JOIN", "right": "JOIN",
    "inner": "JOIN", "full": "JOIN", "cross": "JOIN", "array": "ARRAY JOIN", "union": "UNION",
    "with": "WITH", "distinct": "DISTINCT", "sample": "SAMPLE", "settings": "SETTINGS",
    "format": "FORMAT", "prewhere": "PREWHERE", "qualify": "QUALIFY", "window": "WINDOW",
    "between": "BETWEEN", "like": "LIKE", "ilike": "ILIKE", "case": "CASE", "interval": "INTERVAL",
    "nulls": "NULLS FIRST/LAST",
}  # fmt: skip
_COMPARE_OPS = {"=", "==", "!=", "<>", "<", "<=", ">", ">="}


class _Parser:
    def __init__(self, text: str, values: Mapping[str, Any]) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.values = values

    # token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def _is_kw(self, tok: Token, *words: str) -> bool:
        return tok.kind == "word" and str(tok.value).lower() in words

    def at_kw(self, *words: str) -> bool:
        return self._is_kw(self.tok, *words)

    def at_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.value in ops

    def advance(self) -> Token:
        tok = self.tok
        self.i += 1
        return tok

    def expect_kw(self, word: str) -> None:
        if not self.at_kw(word):
            raise _syntax(f"expected {word.upper()}, found {self._show(self.tok)}", self.tok.pos)
        self.advance()

    def expect_op(self, op: str) -> None:
        if not self.at_op(op):
            raise _syntax(f"expected {op!r}, found {self._show(self.tok)}", self.tok.pos)
        self.advance()

    @staticmethod
    def _show(tok: Token) -> str:
        return "end of query" if tok.kind == "eof" else repr(tok.value)

    def _refuse_clause(self) -> None:
        if self.tok.kind == "word" and str(self.tok.value).lower() in _NOT_SUPPORTED_CLAUSES:
            raise _unsupported(_NOT_SUPPORTED_CLAUSES[str(self.tok.value).lower()])

    # query
    def query(self) -> Query:
        self._refuse_clause()
        self.expect_kw("select")
        self._refuse_clause()
        items = [self.select_item()]
        while self.at_op(","):
            self.advance()
            items.append(self.select_item())
        self.expect_kw("from")
        table, alias = self.table()
        where = None
        self._refuse_clause()
        if self.at_kw("where"):
            self.advance()
            where = self.expr()
        self._refuse_clause()
        order: list[tuple[Any, bool]] = []
        if self.at_kw("order"):
            self.advance()
            self.expect_kw("by")
            order.append(self.order_key())
            while self.at_op(","):
                self.advance()
                order.append(self.order_key())
        self._refuse_clause()
        limit = None
        if self.at_kw("limit"):
            self.advance()
            limit = self.limit_value()
            if self.at_op(",") or self.at_kw("offset"):
                raise HogQLError("hogql_query_error", OFFSET_NOT_ALLOWED_MESSAGE)
            if self.at_kw("by"):
                raise _unsupported("LIMIT BY")
        if self.at_kw("offset"):
            raise HogQLError("hogql_query_error", OFFSET_NOT_ALLOWED_MESSAGE)
        self._refuse_clause()
        if self.at_op(";"):
            self.advance()
        if self.tok.kind != "eof":
            raise _syntax(f"unexpected {self._show(self.tok)}", self.tok.pos)
        return Query(tuple(items), table, alias, where, tuple(order), limit)

    def limit_value(self) -> int:
        tok = self.advance()
        value = tok.value
        if tok.kind == "placeholder":
            value = self._placeholder(tok)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _syntax("LIMIT takes a non-negative integer", tok.pos)
        return value

    def select_item(self) -> SelectItem:
        if self.at_op("*"):
            raise _unsupported("SELECT * (name the columns)")
        expr = self.expr()
        return SelectItem(expr, self.alias())

    def alias(self) -> str | None:
        if self.at_kw("as"):
            self.advance()
            tok = self.advance()
            if tok.kind not in ("word", "qword"):
                raise _syntax("expected an alias after AS", tok.pos)
            return str(tok.value)
        if self.tok.kind == "qword" or (
            self.tok.kind == "word" and str(self.tok.value).lower() not in _KEYWORDS
        ):
            return str(self.advance().value)
        return None

    def table(self) -> tuple[str, str | None]:
        self._refuse_clause()
        if self.at_op("("):
            raise _unsupported("a subquery in FROM")
        parts = [self._name()]
        while self.at_op("."):
            self.advance()
            parts.append(self._name())
        if self.at_op("("):
            raise _unsupported("a table function")
        return ".".join(parts), self.alias()

    def _name(self) -> str:
        tok = self.advance()
        if tok.kind not in ("word", "qword"):
            raise _syntax(f"expected a name, found {self._show(tok)}", tok.pos)
        return str(tok.value)

    def order_key(self) -> tuple[Any, bool]:
        expr = self.expr()
        desc = False
        if self.at_kw("asc", "desc"):
            desc = str(self.advance().value).lower() == "desc"
        return expr, desc

    # expressions
    def expr(self) -> Any:
        items = [self.and_expr()]
        while self.at_kw("or"):
            self.advance()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_expr(self) -> Any:
        items = [self.not_expr()]
        while self.at_kw("and"):
            self.advance()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def not_expr(self) -> Any:
        if self.at_kw("not"):
            self.advance()
            return Not(self.not_expr())
        return self.comparison()

    def comparison(self) -> Any:
        left = self.primary()
        if self.tok.kind == "op" and self.tok.value in _COMPARE_OPS:
            op = str(self.advance().value)
            return Compare(op, left, self.primary())
        negated = False
        if self.at_kw("not") and self._is_kw(self.tokens[self.i + 1], "in"):
            self.advance()
            negated = True
        if self.at_kw("in"):
            self.advance()
            self.expect_op("(")
            items = [self.primary()]
            while self.at_op(","):
                self.advance()
                items.append(self.primary())
            self.expect_op(")")
            return InList(left, tuple(items), negated)
        if self.at_kw("is"):
            self.advance()
            neg = False
            if self.at_kw("not"):
                self.advance()
                neg = True
            self.expect_kw("null")
            return IsNull(left, neg)
        self._refuse_clause()
        if self.at_op("+", "-", "*", "/", "%"):
            raise _unsupported(f"arithmetic ({self.tok.value})")
        return left

    def primary(self) -> Any:
        tok = self.tok
        if tok.kind == "string":
            self.advance()
            return Const(tok.value)
        if tok.kind == "number":
            self.advance()
            return Const(tok.value)
        if tok.kind == "placeholder":
            self.advance()
            return Const(self._placeholder(tok))
        if self.at_op("-") and self.tokens[self.i + 1].kind == "number":
            self.advance()
            return Const(-self.advance().value)
        if self.at_op("("):
            self.advance()
            if self.at_kw("select"):
                raise _unsupported("a subquery")
            items = [self.expr()]
            while self.at_op(","):
                self.advance()
                items.append(self.expr())
            self.expect_op(")")
            return items[0] if len(items) == 1 else TupleExpr(tuple(items))
        if tok.kind == "word":
            low = str(tok.value).lower()
            if low == "null":
                self.advance()
                return Const(None)
            if low in ("true", "false"):
                self.advance()
                return Const(low == "true")
            if low in _NOT_SUPPORTED_CLAUSES:
                raise _unsupported(_NOT_SUPPORTED_CLAUSES[low])
            if low in _KEYWORDS:
                raise _syntax(f"unexpected {tok.value!r}", tok.pos)
        if tok.kind in ("word", "qword"):
            self.advance()
            if tok.kind == "word" and self.at_op("("):
                return self.call(str(tok.value), tok.pos)
            return self.field(str(tok.value), tok.pos)
        raise _syntax(f"unexpected {self._show(tok)}", tok.pos)

    def call(self, name: str, pos: int) -> Call:
        self.expect_op("(")
        args: list[Any] = []
        if not self.at_op(")"):
            args.append(self.expr())
            while self.at_op(","):
                self.advance()
                args.append(self.expr())
        self.expect_op(")")
        return Call(name, tuple(args), pos)

    def field(self, first: str, pos: int) -> Field:
        chain: list[str | int] = [first]
        while True:
            if self.at_op("."):
                self.advance()
                tok = self.advance()
                if tok.kind in ("word", "qword"):
                    chain.append(str(tok.value))
                elif tok.kind == "number" and isinstance(tok.value, int):
                    chain.append(tok.value)
                else:
                    raise _syntax("expected a name after '.'", tok.pos)
            elif self.at_op("["):
                self.advance()
                tok = self.advance()
                if tok.kind == "string":
                    chain.append(str(tok.value))
                elif tok.kind == "number" and isinstance(tok.value, int):
                    chain.append(tok.value)
                elif tok.kind == "placeholder":
                    chain.append(self._placeholder(tok))
                else:
                    raise _syntax("expected a key in [...]", tok.pos)
                self.expect_op("]")
            else:
                return Field(tuple(chain), pos)

    def _placeholder(self, tok: Token) -> Any:
        name = str(tok.value)
        if name not in self.values:
            raise HogQLError("hogql_query_error", f"Placeholder {{{name}}} is not in the provided values")
        value = self.values[name]
        if value is not None and not isinstance(value, str | int | float | bool):
            raise _unsupported(f"a placeholder value of type {type(value).__name__}")
        return value


def parse_query(text: str, values: Mapping[str, Any] | None = None) -> Query:
    """Parse one SELECT of the subset; `values` fill `{name}` placeholders (HogQLQuery.values)."""
    return _Parser(text, values or {}).query()


# -- compile ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    """An operand: `kind` uuid | string | datetime | number | literal | null | tuple;
    `get(row)` its Python value (aware UTC datetime, canonical UUID text, str, number, None)."""

    kind: str
    get: Callable[[Row], Any]
    ch_type: str
    name: str
    const: bool = False
    value: Any = None  # the constant, when `const`
    items: tuple[_Compiled, ...] = ()


_DT_LITERAL = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?)?$")


def _parse_local(text: str, tz: ZoneInfo, tz_name: str, precision: int = 6) -> datetime:
    m = _DT_LITERAL.match(text.strip())
    if m is None:
        raise HogQLError(
            "cannot_parse_text",
            f"Cannot parse string '{text}' as DateTime64(6, '{tz_name}'): expected "
            "'YYYY-MM-DD[ hh:mm:ss[.ffffff]]' (read in that timezone; for another one write "
            "toDateTime64('...', 6, 'UTC'))",
        )
    year, month, day, hh, mm, ss, frac = m.groups()
    micro = int((frac or "").ljust(9, "0")[:6]) if frac else 0
    if precision < 6:
        micro -= micro % (10 ** (6 - precision))
    try:
        local = datetime(
            int(year), int(month), int(day), int(hh or 0), int(mm or 0), int(ss or 0), micro, tzinfo=tz
        )
    except ValueError as exc:
        raise HogQLError(
            "cannot_parse_text", f"Cannot parse string '{text}' as a date and time: {exc}"
        ) from None
    return local.astimezone(UTC)


@dataclass
class _Context:
    table: Table
    qualifiers: frozenset[str]
    tz: ZoneInfo
    tz_name: str
    aliases: Mapping[str, Any]  # SELECT aliases, usable in WHERE and ORDER BY (a column wins)
    resolving: set[str]


def _const(value: Any) -> _Compiled:
    if value is None:
        return _Compiled("null", lambda row: None, "Nullable(Nothing)", "NULL", True, None)
    if isinstance(value, bool):
        return _Compiled("number", lambda row: int(value), "Bool", str(value).lower(), True, int(value))
    if isinstance(value, int | float):
        return _Compiled(
            "number",
            lambda row: value,
            "Int64" if isinstance(value, int) else "Float64",
            str(value),
            True,
            value,
        )
    return _Compiled("literal", lambda row: value, "String", f"'{value}'", True, value)


def _compile(expr: Any, ctx: _Context) -> _Compiled:
    if isinstance(expr, Const):
        return _const(expr.value)
    if isinstance(expr, Field):
        return _compile_field(expr, ctx)
    if isinstance(expr, Call):
        return _compile_call(expr, ctx)
    if isinstance(expr, TupleExpr):
        items = tuple(_compile(item, ctx) for item in expr.items)
        getters = [item.get for item in items]
        return _Compiled("tuple", lambda row: tuple(g(row) for g in getters), "Tuple", "tuple", items=items)
    raise HogQLError("hogql_query_error", "a condition cannot be used as a value here")


def _compile_field(expr: Field, ctx: _Context) -> _Compiled:
    chain = list(expr.chain)
    if (
        len(chain) > 1
        and isinstance(chain[0], str)
        and chain[0] in ctx.qualifiers
        and chain[0] not in ctx.table.columns
    ):
        chain = chain[1:]
    head = chain[0]
    column = ctx.table.columns.get(head) if isinstance(head, str) else None
    if column is None and len(chain) == 1 and head in ctx.aliases and head not in ctx.resolving:
        ctx.resolving.add(str(head))
        try:
            return _compile(ctx.aliases[str(head)], ctx)
        finally:
            ctx.resolving.discard(str(head))
    if column is None:
        shown = ".".join(str(c) for c in expr.chain)
        raise HogQLError("hogql_query_error", f"Unable to resolve field: {shown}")
    path = chain[1:]
    ch_type = column.ch_type.format(tz=ctx.tz_name)
    if not path:
        name = column.name
        return _Compiled(column.kind, lambda row: row[name], ch_type, name)
    if not column.json:
        shown = ".".join(str(c) for c in expr.chain)
        raise HogQLError("hogql_query_error", f"Unable to resolve field: {shown} ({column.name} is not JSON)")
    obj_key = column.name + "#obj"

    def prop(row: Row) -> str | None:
        value = _walk(row[obj_key], path)
        return None if value is _MISSING else hogql_property_text(value)

    name = ".".join([column.name, *(str(p) if _plain(p) else f"`{p}`" for p in path)])
    return _Compiled("string", prop, "Nullable(String)", name)


def _plain(part: str | int) -> bool:
    return isinstance(part, int) or re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", part) is not None


def _const_arg(arg: _Compiled, fn: str, what: str, kinds: tuple[str, ...]) -> Any:
    if not arg.const or arg.kind not in kinds:
        raise HogQLError("hogql_query_error", f"{fn}: {what} must be a constant")
    return arg.value


def _compile_call(expr: Call, ctx: _Context) -> _Compiled:
    low = expr.name.lower()
    if low == "count":
        raise HogQLError("hogql_query_error", "count() is supported only as the whole SELECT list")
    args = [_compile(arg, ctx) for arg in expr.args]
    if low == "jsonextractraw":
        if not args or not isinstance(expr.args[0], Field):
            raise HogQLError("hogql_query_error", "JSONExtractRaw: the first argument must be a JSON column")
        source = _compile_field(expr.args[0], ctx)
        column = ctx.table.columns.get(source.name)
        if column is None or not column.json:
            raise HogQLError("hogql_query_error", f"JSONExtractRaw: {source.name} is not a JSON column")
        path: list[str | int] = []
        for arg in args[1:]:
            value = _const_arg(arg, "JSONExtractRaw", "each key", ("literal", "number"))
            path.append(value if isinstance(value, int) else str(value))
        obj_key = column.name + "#obj"

        def raw(row: Row) -> str:
            value = _walk(row[obj_key], path)
            # ClickHouse's index is 1-based as well
            return "" if value is _MISSING else json_text(value)

        keys = ", ".join(repr(p) if isinstance(p, str) else str(p) for p in path)
        return _Compiled("string", raw, "String", f"JSONExtractRaw({column.name}, {keys})".replace('"', "'"))
    if low == "tostring":
        if len(args) != 1:
            raise HogQLError("hogql_query_error", "toString takes one argument")
        inner = args[0]
        return _Compiled("string", _to_string(inner, ctx), "String", f"toString({inner.name})")
    if low in ("todatetime", "todatetime64"):
        is64 = low == "todatetime64"
        if not 1 <= len(args) - int(is64) <= 2:
            raise HogQLError("hogql_query_error", f"{expr.name}: wrong number of arguments")
        text = _const_arg(args[0], expr.name, "the date and time", ("literal",))
        precision = 0
        if is64:
            precision = _const_arg(args[1], expr.name, "the precision", ("number",))
            if not isinstance(precision, int) or not 0 <= precision <= 9:
                raise HogQLError("hogql_query_error", f"{expr.name}: precision must be 0..9")
        tz_args = args[2:] if is64 else args[1:]
        tz_name = _const_arg(tz_args[0], expr.name, "the timezone", ("literal",)) if tz_args else ctx.tz_name
        try:
            tz = ZoneInfo(str(tz_name))
        except (KeyError, ValueError):
            raise HogQLError("hogql_query_error", f"{expr.name}: unknown timezone {tz_name!r}") from None
        moment = _parse_local(str(text), tz, str(tz_name), min(precision, 6))
        ch_type = f"DateTime64({precision}, '{tz_name}')" if is64 else f"DateTime('{tz_name}')"
        return _Compiled("datetime", lambda row: moment, ch_type, f"{expr.name}(...)", True, moment)
    raise _unsupported(f"the function {expr.name}()")


def _to_string(inner: _Compiled, ctx: _Context) -> Callable[[Row], Any]:
    get = inner.get
    if inner.kind == "datetime":
        tz = ctx.tz

        def as_text(row: Row) -> str | None:
            value = get(row)
            return None if value is None else value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S.%f")

        return as_text
    if inner.kind == "number":
        return lambda row: None if (v := get(row)) is None else str(v)
    return get


# -- comparisons --------------------------------------------------------------------------------


def _key_getter(a: _Compiled, b: _Compiled, ctx: _Context) -> Callable[[Row], Any]:
    """How to read `a` as a comparable key when it is compared with `b`."""
    if a.kind == "null" or b.kind == "null":
        return lambda row: None
    kinds = {a.kind, b.kind}
    if a.kind == "datetime" and b.kind == "datetime":
        return a.get
    if kinds == {"datetime", "literal"}:
        if a.kind == "literal":
            moment = _parse_local(str(a.value), ctx.tz, ctx.tz_name)
            return lambda row: moment
        return a.get
    if "uuid" in kinds and kinds <= {"uuid", "literal", "string"}:
        if a.kind == "uuid":
            get = a.get
            return lambda row: None if (v := get(row)) is None else ch_uuid_key(v)
        if a.const:
            try:
                key = ch_uuid_key(str(a.value))
            except ValueError:
                raise HogQLError("cannot_parse_text", f"Cannot parse uuid {a.value}") from None
            return lambda row: key
        get = a.get

        def uuid_of_text(row: Row) -> Any:
            value = get(row)
            try:
                return None if value is None else ch_uuid_key(value)
            except ValueError:
                return None

        return uuid_of_text
    if kinds <= {"string", "literal"}:
        return a.get
    if kinds <= {"number"}:
        return a.get
    if kinds <= {"number", "string", "literal"}:
        if a.kind == "number":
            return a.get
        get = a.get

        def as_number(row: Row) -> float | None:
            value = get(row)
            try:
                return None if value is None else float(value)
            except ValueError:
                return None

        return as_number
    raise HogQLError("hogql_query_error", f"Cannot compare {a.ch_type} with {b.ch_type}")


def _cmp3(a: Any, b: Any) -> int | None:
    if a is None or b is None:
        return None
    return (a > b) - (a < b)


def _comparator(a: _Compiled, b: _Compiled, ctx: _Context) -> Callable[[Row], int | None]:
    if a.kind == "tuple" or b.kind == "tuple":
        if a.kind != "tuple" or b.kind != "tuple" or len(a.items) != len(b.items):
            raise HogQLError(
                "hogql_query_error", "Cannot compare a tuple with a value or a tuple of another size"
            )
        parts = [_comparator(x, y, ctx) for x, y in zip(a.items, b.items, strict=True)]

        def lexicographic(row: Row) -> int | None:
            for part in parts:
                c = part(row)
                if c != 0:
                    return c
            return 0

        return lexicographic
    left, right = _key_getter(a, b, ctx), _key_getter(b, a, ctx)
    return lambda row: _cmp3(left(row), right(row))


_OPS: dict[str, Callable[[int], bool]] = {
    "=": lambda c: c == 0,
    "==": lambda c: c == 0,
    "!=": lambda c: c != 0,
    "<>": lambda c: c != 0,
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}

Predicate = Callable[[Row], bool | None]


def _compile_condition(expr: Any, ctx: _Context) -> Predicate:
    if isinstance(expr, BoolOp):
        parts = [_compile_condition(item, ctx) for item in expr.items]
        if expr.op == "and":

            def all_of(row: Row) -> bool | None:
                unknown = False
                for part in parts:
                    value = part(row)
                    if value is False:
                        return False
                    unknown = unknown or value is None
                return None if unknown else True

            return all_of

        def any_of(row: Row) -> bool | None:
            unknown = False
            for part in parts:
                value = part(row)
                if value is True:
                    return True
                unknown = unknown or value is None
            return None if unknown else False

        return any_of
    if isinstance(expr, Not):
        inner = _compile_condition(expr.operand, ctx)
        return lambda row: None if (v := inner(row)) is None else not v
    if isinstance(expr, Compare):
        compare = _comparator(_compile(expr.left, ctx), _compile(expr.right, ctx), ctx)
        test = _OPS[expr.op]
        return lambda row: None if (c := compare(row)) is None else test(c)
    if isinstance(expr, InList):
        left = _compile(expr.left, ctx)
        keys = set()
        for item in expr.items:
            value = _compile(item, ctx)
            if not value.const:
                raise HogQLError("hogql_query_error", "IN takes a list of constants")
            keys.add(_key_getter(value, left, ctx)({}))
        get = _key_getter(left, _compile(expr.items[0], ctx), ctx)
        negated = expr.negated
        return lambda row: None if (v := get(row)) is None else (v in keys) != negated
    if isinstance(expr, IsNull):
        get = _compile(expr.operand, ctx).get
        negated = expr.negated
        return lambda row: (get(row) is None) != negated
    if isinstance(expr, Const) and isinstance(expr.value, bool):
        return lambda row: expr.value
    raise HogQLError("hogql_query_error", "WHERE needs a condition (a comparison, IN, IS NULL, AND, OR, NOT)")


def _sort_key(compiled: _Compiled) -> Callable[[Row], Any]:
    get = compiled.get
    if compiled.kind == "uuid":
        return lambda row: None if (v := get(row)) is None else ch_uuid_key(v)
    if compiled.kind == "tuple":
        raise _unsupported("ORDER BY a tuple")
    return get


# -- run ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryResult:
    """What PostHog's HogQL runner returns; `has_more`/`limit`/`offset` only without LIMIT."""

    columns: list[str]
    types: list[list[str]]
    results: list[list[Any]]
    has_more: bool | None
    limit: int | None
    offset: int | None


def _is_count(item: SelectItem) -> bool:
    return isinstance(item.expr, Call) and item.expr.name.lower() == "count" and not item.expr.args


def run_query(
    text: str,
    tables: Mapping[str, tuple[Table, Iterable[Row]]],
    *,
    tz_name: str,
    values: Mapping[str, Any] | None = None,
) -> QueryResult:
    """Parse, check and run `text` over the rows of the table it names (`tables`: name → (schema, rows))."""
    query = parse_query(text, values)
    found = tables.get(query.table)
    if found is None:
        raise HogQLError("hogql_query_error", f"Unknown table `{query.table}`.")
    table, rows = found
    tz = ZoneInfo(tz_name)
    qualifiers = set(table.qualifiers)
    if query.alias:
        qualifiers.add(query.alias)
    aliases = {item.alias: item.expr for item in query.select if item.alias}
    ctx = _Context(table, frozenset(qualifiers), tz, tz_name, aliases, set())

    counting = [_is_count(item) for item in query.select]
    if any(counting) and not all(counting):
        raise _unsupported("count() next to other columns (GROUP BY)")
    outputs = [] if all(counting) else [_compile(item.expr, ctx) for item in query.select]
    if any(o.kind == "tuple" for o in outputs):
        raise _unsupported("a tuple in the SELECT list")
    keep = _compile_condition(query.where, ctx) if query.where is not None else None
    order = [(_sort_key(_compile(expr, ctx)), desc) for expr, desc in query.order]

    selected = [row for row in rows if keep is None or keep(row) is True]
    if not outputs:
        columns = [item.alias or "count()" for item in query.select]
        return _paged(
            query.limit, columns, [[c, "UInt64"] for c in columns], [[len(selected)] * len(columns)]
        )
    columns = [item.alias or out.name for item, out in zip(query.select, outputs, strict=True)]

    if order:
        for key, desc in reversed(order):
            with_value = [(key(row), row) for row in selected]
            present = [pair for pair in with_value if pair[0] is not None]
            missing = [pair[1] for pair in with_value if pair[0] is None]
            present.sort(key=lambda pair: pair[0], reverse=desc)
            selected = [pair[1] for pair in present] + missing
    else:
        selected.sort(key=lambda row: zlib.crc32(str(row.get("uuid", "")).encode()))

    cap = DEFAULT_RETURNED_ROWS + 1 if query.limit is None else min(query.limit, MAX_SELECT_RETURNED_ROWS)
    window = selected[:cap]
    converters = [_output(out, tz) for out in outputs]
    results = [[convert(row) for convert in converters] for row in window]
    types = [[name, out.ch_type] for name, out in zip(columns, outputs, strict=True)]
    return _paged(query.limit, columns, types, results)


def _paged(
    limit: int | None, columns: list[str], types: list[list[str]], results: list[list[Any]]
) -> QueryResult:
    if limit is not None:
        return QueryResult(columns, types, results[:MAX_SELECT_RETURNED_ROWS], None, None, None)
    has_more = len(results) > DEFAULT_RETURNED_ROWS
    return QueryResult(columns, types, results[:DEFAULT_RETURNED_ROWS], has_more, DEFAULT_RETURNED_ROWS, 0)


def _output(compiled: _Compiled, tz: ZoneInfo) -> Callable[[Row], Any]:
    get = compiled.get
    if compiled.kind == "datetime":
        return lambda row: None if (v := get(row)) is None else v.astimezone(tz)
    return get
