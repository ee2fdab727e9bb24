"""The garbage collector's policy for a daemon process.

CPython's default (a generation-0 pass every 700 net container allocations) suits
short programs. A daemon that retains events (an Entry and a Frame each) and keeps
thousands of connections allocates containers steadily and frees them rarely, so the
young passes come every few hundred publishes and the older ones traverse every ring
entry, subscriber and transport: measured with perf on the publish-bound benchmark
(p1-pipe), `gc_collect_main` and its visitors were 12% of the daemon's CPU, about
2.4 µs per publish. Cycles are rare here (nothing on the hot path makes one), so the
collector runs far less often; it still runs.
"""

from __future__ import annotations

import gc

# Generation 0 every 50,000 net allocations (tens of MB at most), generation 1 every
# 20 of those, generation 2 every 10 of those (and CPython's own 25% rule on top).
THRESHOLDS = (50_000, 20, 10)


def tune() -> None:
    """At start-up, after the imports: set the thresholds, and move what exists now
    (modules, config, classes) out of the collector's sight for good."""
    gc.set_threshold(*THRESHOLDS)
    gc.collect()
    gc.freeze()
