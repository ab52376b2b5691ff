"""Indicator files in, matches out: loading, normalisation and matching of indicators.

Formats (detected from content, or forced): plain lists, CSV, Zeek intel, STIX 2.1 bundles,
MISP event exports and feed manifests, Maltrail trail files; and STIX 2.1 from a TAXII 2.1
collection (:mod:`.taxii`). See rules/README.md for the rules of each format and
:mod:`.sets` for why the data structures are what they are.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import FORMATS, KINDS, FileSummary, Indicator, IndicatorFileError, LoadReport
    from .normalise import normalise_name
    from .sets import IndicatorSet

#: each export's module, imported at its first use (PEP 562): a run without indicators never
#: loads the set, its file formats and TAXII (17 ms of start-up)
_EXPORTS = {"FORMATS": "model", "KINDS": "model", "FileSummary": "model", "Indicator": "model",
            "IndicatorFileError": "model", "LoadReport": "model", "normalise_name": "normalise",
            "IndicatorSet": "sets"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "FORMATS",
    "KINDS",
    "FileSummary",
    "Indicator",
    "IndicatorFileError",
    "IndicatorSet",
    "LoadReport",
    "normalise_name",
]
