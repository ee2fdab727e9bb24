"""Summarise py-spy collapsed stacks (`--format raw`): self and inclusive share per function.

.venv/bin/python -m loadtest.profile_summary loadtest/results/profile-s1-10k-fanout.txt
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_LINE_NO = re.compile(r":\d+\)$")


def _frame(raw: str) -> str:
    # "write (uvloop/handles/...:123)" -> "write (uvloop/handles/...)"; same function, any line.
    return _LINE_NO.sub(")", raw.strip())


def summarise(path: Path, top: int = 20) -> str:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";") if f]
        total += n
        self_counts[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return f"{path}: no samples"
    out = [f"{path.name}: {total} samples", "", "self %   function"]
    out += [f"{100 * c / total:6.1f}   {f}" for f, c in self_counts.most_common(top)]
    out += ["", "incl %   function"]
    out += [f"{100 * c / total:6.1f}   {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    for name in argv if argv is not None else sys.argv[1:]:
        print(summarise(Path(name)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
