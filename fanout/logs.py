"""Logging to stderr under `fanout.*` names; nothing is logged per event."""

from __future__ import annotations

import logging
import sys


def setup(level: str, tag: str = "") -> None:
    """`tag` names the process when there are several (workers: "w1", "w2", ...)."""
    handler = logging.StreamHandler(sys.stderr)
    where = f"[{tag}] " if tag else ""
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {where}%(name)s: %(message)s")
    )
    root = logging.getLogger("fanout")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def set_level(level: str) -> None:
    logging.getLogger("fanout").setLevel(level.upper())
