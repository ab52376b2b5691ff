"""Keyword indicators: a string that alerts wherever it occurs inside an observed name.

For brand-impersonation and typo-squat watching (``keyword:paypal`` alerts on
``paypal-login.example.net`` and ``secure.mypaypal.top``). Every keyword of a set is in one
Aho-Corasick automaton (pyahocorasick, a C extension), so a name is scanned once whatever
the number of keywords, and the result of each distinct name is kept (bounded): names repeat
all day, and a repeated name costs one dict lookup.

Keywords are matched on the name as the matcher normalises it: lower case, A-labels. A
keyword in ASCII is looked for there (so ``paypal`` also finds the ASCII part of a punycode
label, ``xn--paypal-...``). A keyword with non-ASCII letters (``bücher``, after the same
UTS 46 mapping names get) is looked for in the name's Unicode form, its ``xn--`` labels
decoded: the punycode of a keyword is a substring of a name's punycode only when the label is
the keyword itself, which the Unicode form finds too. The offset of a hit counts characters
in the string it was found in: the normalised name, or (``unicode`` set) that Unicode form.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import ahocorasick

#: distinct names whose scan results are kept; past it the memo starts again (names repeat)
SCAN_CACHE_MAX = 1 << 16


class Substring(NamedTuple):
    """Where a keyword sits in a name: the keyword, its first offset, and the Unicode form of
    the name when that is where it was found (None: in the normalised name itself). A named
    tuple: a fifth of a busy mix of names holds some keyword, and a frozen dataclass costs
    several times more to make."""

    keyword: str
    offset: int
    unicode: str | None = None


def unicode_form(name: str) -> str:
    """The name with its ``xn--`` labels decoded (a label that does not decode stays)."""
    labels = name.split(".")
    for i, label in enumerate(labels):
        if label.startswith("xn--"):
            try:
                labels[i] = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, ValueError):
                pass
    return ".".join(labels)


class KeywordIndex:
    """An automaton over the keywords of a set, built once per load (or cache load)."""

    __slots__ = ("_auto", "_unicode", "_memo")

    def __init__(self, keywords: Iterable[str]) -> None:
        auto = ahocorasick.Automaton()
        unicode = False
        for kw in keywords:
            auto.add_word(kw, kw)
            unicode = unicode or not kw.isascii()
        auto.make_automaton()
        self._auto = auto
        self._unicode = unicode  # some keyword is non-ASCII: names with xn-- get a second scan
        self._memo: dict[str, tuple[Substring, ...]] = {}

    def scan(self, name: str) -> tuple[Substring, ...]:
        """Every keyword in ``name`` (normalised), once each at its first offset.

        One function on purpose (measured: a call less per name matters at a million names
        a second); a name seen before costs one dict lookup."""
        memo = self._memo
        got = memo.get(name)
        if got is not None:
            return got
        found: dict[str, Substring] | None = None
        for end, kw in self._auto.iter(name):
            if found is None:
                found = {}
            if kw not in found:  # hits come by end offset: the first is the leftmost
                found[kw] = Substring(kw, end - len(kw) + 1)
        if self._unicode and "xn--" in name:
            form = unicode_form(name)
            for end, kw in self._auto.iter(form):
                if found is None:
                    found = {}
                if kw not in found and not kw.isascii():
                    found[kw] = Substring(kw, end - len(kw) + 1, form)
        got = tuple(found.values()) if found else ()
        if len(memo) >= SCAN_CACHE_MAX:
            memo.clear()
        memo[name] = got
        return got
