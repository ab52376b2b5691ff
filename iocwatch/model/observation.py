"""The one small object every dissector hands on: a value seen on one channel.

Outputs (records, alerts, reports) consume observations, never packets.
"""

from __future__ import annotations

from dataclasses import dataclass

from iocwatch.model.channels import Channel


@dataclass(slots=True, frozen=True)
class Observation:
    """A name (or address, URL, hash, fingerprint) exactly as on the wire, and its channel."""

    name: str
    channel: Channel
