"""Loading the indicator files a command names: one description of them, one loader, one
report on stderr, shared by the sensor (and its reloads) and the retro-hunt, so the two can
never read the same flags differently."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: every run builds its IndicatorSources, few load any
    from iocwatch.indicators.allow import AllowLists
    from iocwatch.indicators.model import LoadReport
    from iocwatch.indicators.sets import IndicatorSet

#: indicators on an allow-list listed on stderr at load (the total follows)
MAX_LISTED_ALLOWED = 20


@dataclass(frozen=True)
class IndicatorSources:
    """What ``--ioc``, ``--ioc-exact``, ``--ioc-format``, ``--ioc-cache`` and ``--misp-all``
    asked for. ``files`` holds every file once, in order (``--ioc-exact`` files too)."""

    files: tuple[str, ...]
    exact: tuple[str, ...] = ()
    format: str | None = None
    cache: str | None = None
    misp_all: bool = False
    #: ``--allowlist`` files (reloaded with the indicators)
    allowlists: tuple[str, ...] = ()


def load_indicators(sources: IndicatorSources) -> tuple[IndicatorSet, LoadReport]:
    """Load every file (cached when asked); raises IndicatorFileError on an unreadable one."""
    from iocwatch.indicators.sets import IndicatorSet

    paths = list(sources.files)
    exact = list(sources.exact)
    if sources.cache:
        indicators, report, _cached = IndicatorSet.load_cached(
            paths, sources.format, cache=sources.cache, misp_all=sources.misp_all, exact=exact)
        return indicators, report
    return IndicatorSet.load(paths, sources.format, misp_all=sources.misp_all, exact=exact)


def report_load(report: LoadReport, quiet: bool) -> None:
    """Skipped lines and warnings on stderr (bounded), so a bad feed is noticed."""
    for path, line, reason in report.skipped[:20]:
        sys.stderr.write(f"iocwatch: {path}:{line}: skipped: {reason}\n")
    if report.skipped_total > 20:
        sys.stderr.write(f"iocwatch: ... {report.skipped_total - 20} more skipped entries\n")
    for w in report.warnings:
        sys.stderr.write(f"iocwatch: warning: {w}\n")
    if not quiet:
        sys.stderr.write(f"iocwatch: {report.loaded} indicators loaded from "
                         f"{len(report.files)} file(s), {report.skipped_total} skipped, "
                         f"{report.unsupported} unsupported, {report.ignored} ignored\n")


def load_allowlists(sources: IndicatorSources) -> AllowLists | None:
    """The ``--allowlist`` files (None without any); raises IndicatorFileError as the
    indicator files do."""
    from iocwatch.indicators.allow import AllowLists

    return AllowLists.load(sources.allowlists) if sources.allowlists else None


def report_allowlists(allow: AllowLists, indicators: IndicatorSet, quiet: bool) -> dict:
    """The allow-lists' own load problems, then every indicator whose value is allowed (a
    feed to clean at the source): the first :data:`MAX_LISTED_ALLOWED` with file and line on
    stderr, and a total. Returns what ``--stats-json`` shows of it."""
    rep = allow.report
    for path, line, reason in rep.skipped[:20]:
        sys.stderr.write(f"iocwatch: allowlist {path}:{line}: skipped: {reason}\n")
    if rep.skipped_total > 20:
        sys.stderr.write(f"iocwatch: allowlist: ... {rep.skipped_total - 20} more skipped\n")
    for w in rep.warnings:
        sys.stderr.write(f"iocwatch: warning: allowlist {w}\n")
    listed = allow.listed(indicators)
    for ind, got in listed[:MAX_LISTED_ALLOWED]:
        sys.stderr.write(f"iocwatch: warning: {ind.file}:{ind.line}: indicator {ind.value} is "
                         f"allow-listed by {got.list} ({got.type} {got.entry}, {got.file}:"
                         f"{got.line}): its matches are suppressed\n")
    if listed:
        sys.stderr.write(f"iocwatch: warning: {len(listed)} indicators are allow-listed"
                         + (f" ({len(listed) - MAX_LISTED_ALLOWED} not listed above)"
                            if len(listed) > MAX_LISTED_ALLOWED else "") + "\n")
    if not quiet:
        sys.stderr.write(f"iocwatch: {len(allow)} allow-list entries loaded from "
                         f"{len(rep.files)} file(s), {rep.skipped_total} skipped\n")
    return {"entries": len(allow), "files": len(rep.files), "skipped": rep.skipped_total,
            "allowlisted_indicators": len(listed),
            "allowlisted": [{"value": ind.value, "file": ind.file, "line": ind.line,
                             "list": got.list, "entry": got.entry, "type": got.type}
                            for ind, got in listed[:100]]}
