"""Loading the indicator files a command names: one description of them, one loader, one
report on stderr, shared by the sensor (and its reloads) and the retro-hunt, so the two can
never read the same flags differently."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from iocwatch.indicators import IndicatorSet, LoadReport


@dataclass(frozen=True)
class IndicatorSources:
    """What ``--ioc``, ``--ioc-exact``, ``--ioc-format``, ``--ioc-cache`` and ``--misp-all``
    asked for. ``files`` holds every file once, in order (``--ioc-exact`` files too)."""

    files: tuple[str, ...]
    exact: tuple[str, ...] = ()
    format: str | None = None
    cache: str | None = None
    misp_all: bool = False


def load_indicators(sources: IndicatorSources) -> tuple[IndicatorSet, LoadReport]:
    """Load every file (cached when asked); raises IndicatorFileError on an unreadable one."""
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
