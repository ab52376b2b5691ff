"""``iocwatch``: which command runs, and how its errors end. The commands themselves are in
:mod:`iocwatch.commands`; each is imported only when it runs."""

from __future__ import annotations

import importlib
import os
import sys

from iocwatch.capture.files import CaptureError
from iocwatch.usage import UsageError

#: subcommand -> the module whose ``main(argv)`` runs it; anything else is the sensor
SUBCOMMANDS = {
    "coverage": "iocwatch.commands.coverage",
    "explain": "iocwatch.commands.explain",
    "hunt": "iocwatch.commands.hunt",
    "ingest": "iocwatch.commands.ingest",
    "serve": "iocwatch.commands.serve",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
        from iocwatch.commands import sensor

        return sensor.main(argv)
    except (UsageError, CaptureError) as exc:
        sys.stderr.write(f"iocwatch: error: {exc}\n")
        return 2
    except BrokenPipeError:
        # the reader of our stdout went away (`| head`): not an error; silence the final flush
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
