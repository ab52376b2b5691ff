"""What every text indicator format shares: the sink readers report to, the line limit, and
the line walk with its bad-text check (the readers themselves are in :mod:`.formats` and
:mod:`.maltrail`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from . import model as m

MAX_LINE = 65536


class Sink(Protocol):
    """Where a reader puts what it found in one file (named ``path``)."""

    path: str

    def add(self, raw: str, hint: str | None, line: int, meta: dict[str, Any],
            exact: bool) -> None: ...

    def add_names(self, names: list[str], first_line: int, meta: dict[str, Any],
                  exact: bool) -> None:
        """Domains already normalised (:data:`normalise.PLAIN_NAME`), one a line from
        ``first_line`` on: what :meth:`add` would do with each, at once."""

    def skip(self, line: int, reason: str, why: str = m.R_MALFORMED,
             values: tuple[str, ...] = ()) -> None: ...

    def unsupported(self, line: int, what: str, listed: bool = False,
                    why: str = m.R_UNSUPPORTED, values: tuple[str, ...] = ()) -> None: ...

    def ignore(self, line: int, why: str, values: tuple[str, ...] = ()) -> None: ...

    def comment(self) -> None: ...

    def warn(self, text: str) -> None: ...

    def read_sibling(self, name: str) -> bytes | None: ...

    def volatile(self) -> None: ...


def bad_text(s: str) -> str | None:
    """Why text holding an undecodable sequence (U+FFFD) or a NUL is skipped, else None."""
    if "\ufffd" in s:
        return "invalid UTF-8"
    if "\x00" in s:
        return "NUL byte"
    return None


def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its CR) for each line of a file."""
    for n, line in enumerate(text.split("\n"), 1):
        yield n, line.removesuffix("\r")


def content_lines(text: str, sink: Sink) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) for each line with content; an over-long line is counted
    as skipped, blank ones pass unseen."""
    for n, line in numbered_lines(text):
        if len(line) > MAX_LINE:
            sink.skip(n, f"line longer than {MAX_LINE} characters", m.R_MALFORMED)
            continue
        s = line.strip()
        if s:
            yield n, s
