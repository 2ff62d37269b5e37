"""Strings that match a Python regular expression, and near misses that do not.

`matching(pattern, rng)` walks the pattern's parse tree (the standard library's own
parser, `re._parser`) and emits one string it accepts: literals, classes and categories,
alternation, groups and back-references, greedy and lazy quantifiers (0-3 extra
repetitions past the minimum). Anchors, word boundaries and lookarounds emit nothing,
so the caller checks the result with `re.search` and places anchored matches alone.
`near_miss(pattern, rng)` emits the same kind of string with one element spoiled (a
literal changed, a class character taken from outside the class, a quantifier one
short), which usually no longer matches; the caller checks that too. `group` replaces
what one capturing group emits (a number the grader reads from that group). Pure: no
state, no I/O; every choice comes from the `random.Random` it is given.
"""

from __future__ import annotations

import random
import re
import re._constants as sre  # type: ignore[import-not-found,unused-ignore]
import re._parser as sre_parse  # type: ignore[import-not-found,unused-ignore]
from typing import Any

__all__ = ["matching", "near_miss"]

_EXTRA_REPEATS = 3  # at most this many repetitions past a quantifier's minimum
_MAX_LENGTH = 400  # past this many characters, repetitions stop at the quantifier's minimum
_HARD_LENGTH = 20_000  # and past this many, even the minimum is cut short (the match then fails)
_POOL = "aeinorstlAERTxyz0123456789 -_.,:/#@"  # candidates for "some character (not) in this set"
_CATEGORY = {
    sre.CATEGORY_DIGIT: lambda c: c.isdigit(),
    sre.CATEGORY_NOT_DIGIT: lambda c: not c.isdigit(),
    sre.CATEGORY_SPACE: lambda c: c.isspace(),
    sre.CATEGORY_NOT_SPACE: lambda c: not c.isspace(),
    sre.CATEGORY_WORD: lambda c: c.isalnum() or c == "_",
    sre.CATEGORY_NOT_WORD: lambda c: not (c.isalnum() or c == "_"),
}
_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", sre.MAX_REPEAT)}


def _in_set(items: list[tuple[Any, Any]], ch: str) -> bool:
    """Whether one character belongs to a `[...]` class (its parsed items)."""
    negate = False
    found = False
    for op, arg in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            found = found or ord(ch) == arg
        elif op is sre.RANGE:
            found = found or arg[0] <= ord(ch) <= arg[1]
        elif op is sre.CATEGORY:
            test = _CATEGORY.get(arg)
            found = found or (test is not None and test(ch))
    return found != negate


def _pick(test: Any, want: bool, rng: random.Random) -> str:
    """A character from the pool for which `test(ch) == want` (a space when none is)."""
    fits = [c for c in _POOL if bool(test(c)) == want]
    return rng.choice(fits) if fits else " "


def _spoil_literal(code: int, rng: random.Random) -> str:
    ch = chr(code)
    if ch.isdigit():
        return rng.choice([d for d in "0123456789" if d != ch])
    if ch.isalpha():
        pool = "aeiou" if ch.lower() not in "aeiou" else "bcdfg"
        other = rng.choice(pool)
        return other.upper() if ch.isupper() else other
    return ""  # punctuation: leave it out


class _Walker:
    """One generation: the random source, group texts, and which element (if any) to spoil."""

    def __init__(self, rng: random.Random, spoil: int, group: int | None, group_text: str) -> None:
        self.rng = rng
        self.spoil = spoil  # index of the spoilable element to spoil; -1: none
        self.seen = 0  # spoilable elements visited so far
        self.groups: dict[int, str] = {}
        self.group = group
        self.group_text = group_text
        self.out: list[str] = []
        self.length = 0

    def _spoiling(self) -> bool:
        hit = self.seen == self.spoil
        self.seen += 1
        return hit

    def emit(self, text: str) -> None:
        self.out.append(text)
        self.length += len(text)

    def walk(self, tokens: Any) -> None:
        for op, arg in tokens:
            self.node(op, arg)

    def node(self, op: Any, arg: Any) -> None:
        rng = self.rng
        if op is sre.LITERAL:
            self.emit(_spoil_literal(arg, rng) if self._spoiling() else chr(arg))
        elif op is sre.NOT_LITERAL:
            self.emit(chr(arg) if self._spoiling() else _pick(lambda c: ord(c) != arg, True, rng))
        elif op is sre.ANY:
            self.emit("\n" if self._spoiling() else rng.choice("abcdefghijklmnopqrstuvwxyz"))
        elif op is sre.IN:
            self.emit(_pick(lambda c: _in_set(arg, c), not self._spoiling(), rng))
        elif op is sre.CATEGORY:
            test = _CATEGORY.get(arg, lambda c: True)
            self.emit(_pick(test, not self._spoiling(), rng))
        elif op is sre.BRANCH:
            self.walk(rng.choice(arg[1]))
        elif op is sre.SUBPATTERN:
            group, sub = arg[0], arg[-1]
            start = len(self.out)
            if group is not None and group == self.group:
                self.emit(self.group_text)
            else:
                self.walk(sub)
            if group is not None:
                self.groups[group] = "".join(self.out[start:])
        elif op in _REPEATS:
            low, high, sub = arg
            count = low + rng.randint(0, min(high - low, _EXTRA_REPEATS))
            if low > 0 and self._spoiling():
                count = low - 1
            for i in range(count):
                if (self.length > _MAX_LENGTH and i >= low) or self.length > _HARD_LENGTH:
                    break
                self.walk(sub)
        elif op is sre.GROUPREF:
            self.emit(self.groups.get(arg, ""))
        elif op is sre.GROUPREF_EXISTS:
            self.walk(arg[1] if arg[0] in self.groups or arg[2] is None else arg[2])
        elif op is getattr(sre, "ATOMIC_GROUP", None):
            self.walk(arg)
        # AT (anchors, boundaries), ASSERT, ASSERT_NOT: nothing to emit.


def _generate(pattern: str, rng: random.Random, spoil: bool, group: int | None, group_text: str) -> str:
    try:
        tree = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return ""
    if not spoil:
        walker = _Walker(rng, -1, group, group_text)
        walker.walk(tree)
        return "".join(walker.out)
    # Count the spoilable elements of one walk, then replay the same draws spoiling one of them.
    state = rng.getstate()
    counter = _Walker(rng, -1, group, group_text)
    counter.walk(tree)
    chooser = random.Random(rng.random())
    rng.setstate(state)
    walker = _Walker(rng, chooser.randrange(counter.seen) if counter.seen else -1, group, group_text)
    walker.walk(tree)
    return "".join(walker.out)


def matching(pattern: str, rng: random.Random, *, group: int | None = None, group_text: str = "") -> str:
    """A string the pattern accepts (usually; check with `re.search`); "" when it cannot be parsed."""
    return _generate(pattern, rng, False, group, group_text)


def near_miss(pattern: str, rng: random.Random, *, group: int | None = None, group_text: str = "") -> str:
    """A string like `matching`'s with one element spoiled (usually rejected; check with `re.search`)."""
    return _generate(pattern, rng, True, group, group_text)
