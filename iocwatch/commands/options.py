"""What every command's parser shares: the parser class whose errors are one line, and the
indicator and alert flags, each defined once here for the sensor and ``iocwatch hunt``."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from iocwatch.indicators.model import FORMATS
from iocwatch.usage import UsageError

if TYPE_CHECKING:
    from iocwatch.indicators.loading import IndicatorSources


class Parser(argparse.ArgumentParser):
    """argparse with its errors raised as :class:`UsageError` (one line, no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


#: flag -> its argparse definition (help included). A command takes the flags it needs, in
#: the order its --help lists them, and may word a help text for its own context.
INDICATOR_FLAGS: dict[str, dict[str, Any]] = {
    "--ioc": dict(action="append", default=[], metavar="FILE",
                  help="indicator file (plain list, CSV, Zeek intel, STIX 2.1, MISP, Maltrail; "
                  "format detected from content) or TAXII 2.1 collection "
                  "(taxii+https://host/api-root/collections/ID/, credentials from "
                  "IOCWATCH_TAXII_USER/_PASSWORD or IOCWATCH_TAXII_CREDENTIALS); may be repeated"),
    "--ioc-format": dict(choices=FORMATS, help="force the format of every --ioc file"),
    "--ioc-cache": dict(metavar="FILE",
                        help="keep the compiled indicator tables here; reused (in well under 2 s "
                        "for a million domains) while the --ioc files are unchanged"),
    "--ioc-exact": dict(action="append", default=[], metavar="FILE",
                        help="indicator file whose domains match only themselves, not "
                        "subdomains; repeatable (also given as --ioc)"),
    "--misp-all": dict(action="store_true", help="take MISP attributes not flagged to_ids too"),
    "--allowlist": dict(action="append", default=[], metavar="FILE",
                        help="values that never alert (every --ioc format, and MISP "
                        "warninglists: hostname, string, cidr, substring, regex); repeatable, "
                        "reloaded with the indicators"),
    "--show-suppressed": dict(action="store_true",
                              help="write allow-listed matches too, marked \"suppressed\""),
    "--alerts": dict(metavar="FILE",
                     help="append alerts (JSON lines) to FILE ('-': stdout); default stdout "
                     "when records go elsewhere"),
    "--alert-format": dict(choices=("json", "ecs"), default="json",
                           help="alert schema: iocwatch JSON (default) or Elastic Common Schema"),
    "--sensor-name": dict(default=socket.gethostname(),
                          help="sensor name put in every alert (default: the host name)"),
    "--fail-on-alert": dict(action="store_true",
                            help="exit with status 3 when anything matched"),
}


def add_indicator_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                        flags: Iterable[str], helps: Mapping[str, str] | None = None) -> None:
    """Add ``flags`` (keys of :data:`INDICATOR_FLAGS`) in this order; ``helps`` rewords some."""
    for flag in flags:
        kw = dict(INDICATOR_FLAGS[flag])
        if helps and flag in helps:
            kw["help"] = helps[flag]
        parser.add_argument(flag, **kw)


def merge_exact(args: argparse.Namespace) -> None:
    """``--ioc-exact`` files are indicator files too: ``args.ioc`` lists every file once."""
    args.ioc = args.ioc + [p for p in args.ioc_exact if p not in args.ioc]


def indicator_sources(args: argparse.Namespace) -> IndicatorSources:
    """The parsed indicator flags as the loader takes them."""
    from iocwatch.indicators.loading import IndicatorSources

    return IndicatorSources(files=tuple(dict.fromkeys(args.ioc + args.ioc_exact)),
                            exact=tuple(args.ioc_exact), format=args.ioc_format,
                            cache=args.ioc_cache, misp_all=args.misp_all,
                            allowlists=tuple(dict.fromkeys(getattr(args, "allowlist", []))))
