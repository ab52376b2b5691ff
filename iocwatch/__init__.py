"""iocwatch: server names from DNS, TLS, QUIC and HTTP traffic, matched against indicators.

Data path, one sub-package per stage::

    capture -> decode -> flows -> protocols -> observations -> indicators -> outputs
"""

__version__ = "0.1.0"
