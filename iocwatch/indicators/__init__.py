"""Indicator files in, matches out: loading, normalisation and matching of indicators.

Formats (detected from content, or forced): plain lists, CSV, Zeek intel, STIX 2.1 bundles,
MISP event exports and feed manifests, Maltrail trail files; and STIX 2.1 from a TAXII 2.1
collection (:mod:`.taxii`). See rules/README.md for the rules of each format and
:mod:`.sets` for why the data structures are what they are.
"""

from .model import (
    FORMATS,
    KINDS,
    FileSummary,
    Indicator,
    IndicatorFileError,
    LoadReport,
)
from .normalise import normalise_name
from .sets import IndicatorSet

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
