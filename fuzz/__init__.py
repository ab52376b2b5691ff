"""iocwatch's own fuzzing: one target per parser, file reader and server, plus two engines.

``fuzz.targets`` holds the targets (``target(data: bytes) -> None``, asserting properties),
``fuzz.seeds`` builds their seeds from ``samples/`` (and ``../shared/corpus/`` when present),
``fuzz.mutate`` is the always-available mutation loop. ``scripts/fuzz.py`` runs them (atheris
when installed); ``tests/test_fuzz_targets.py`` replays every crash ever found and runs every
target briefly in CI.
"""
