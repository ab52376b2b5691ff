"""Every entry point and all argparse code: one module per command (``sensor``, ``ingest``,
``hunt``, ``coverage``, ``serve``), the flags they share (``options``: the indicator flags),
the sensor's other flag groups (``sensor_options``) and ``--config`` (``config``). Feature
packages below take plain values or typed options, never an argparse parser.
"""
