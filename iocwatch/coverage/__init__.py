"""Which names would DNS monitoring alone have missed? (``iocwatch coverage``, whose command
line is :mod:`iocwatch.commands.coverage`)

Works from mercury-schema records, ours or mercury's own JSON lines, or from a capture through
the sensor engine (:mod:`.inputs`); the report is the same either way.
"""

from __future__ import annotations

from iocwatch.coverage.builder import CoverageBuilder, CoverageReport
from iocwatch.coverage.extract import LABELS, LOCAL_SOURCES, SOURCES, normalise, registrable
from iocwatch.coverage.render import render_html, render_json, render_png, render_text

__all__ = [
    "LABELS",
    "LOCAL_SOURCES",
    "SOURCES",
    "CoverageBuilder",
    "CoverageReport",
    "normalise",
    "registrable",
    "render_html",
    "render_json",
    "render_png",
    "render_text",
]
