"""What a SIGHUP may change: old and new settings in, the settings to run with out.

Pure (no I/O): the server reads the file, this decides, the server applies. Only
settings that the running objects read afresh for each connection or each timer
are live; the others are baked into listeners, sockets, rings or pre-encoded
frames at start, so a change to them is reported as needing a restart and the
old value stays in force (never half-applied).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from .config import Config, Limits

# section -> keys applied without dropping a connection.
LIVE: dict[str, frozenset[str]] = {
    # The hub reads its Limits on each admission and each write; the subscriber
    # protocols read header size and timeout, and the topic cap, per new request.
    "limits": frozenset(f.name for f in msgspec.structs.fields(Limits)),
    # Read at each heartbeat and at the start of the drain.
    "stream": frozenset({"heartbeat_interval_s", "shutdown_timeout_s"}),
    "log": frozenset({"level"}),
}


@dataclass(frozen=True, slots=True)
class Plan:
    config: Config  # the new live values, the running restart-only ones
    applied: tuple[str, ...]  # dotted keys whose new value takes effect now
    restart: tuple[str, ...]  # dotted keys changed in the file, kept until a restart


def plan(old: Config, new: Config) -> Plan:
    applied: list[str] = []
    restart: list[str] = []
    sections: dict[str, Any] = {}
    for field in msgspec.structs.fields(Config):
        name = field.name
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        if not isinstance(before, msgspec.Struct):
            restart.append(name)  # [[listener]]: sockets are bound at start
            continue
        live = LIVE.get(name, frozenset())
        changes: dict[str, Any] = {}
        for key in msgspec.structs.fields(before):
            value = getattr(after, key.name)
            if getattr(before, key.name) == value:
                continue
            if key.name in live:
                changes[key.name] = value
                applied.append(f"{name}.{key.name}")
            else:
                restart.append(f"{name}.{key.name}")
        if changes:
            sections[name] = msgspec.structs.replace(before, **changes)
    config = msgspec.structs.replace(old, **sections) if sections else old
    return Plan(config, tuple(applied), tuple(restart))
