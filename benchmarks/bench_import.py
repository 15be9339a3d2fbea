"""Time of ``import stmorph`` in a fresh interpreter, and the heavy modules it does not import.

Run::

    .venv/bin/python benchmarks/bench_import.py [--repeats 5]

Each repeat starts a new Python process (``python -X importtime`` is not needed: the wall time of
the process that only imports stmorph, minus that of an empty process, is the import time).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "numba", "lightgbm", "timm", "squidpy")
CHECK = f"import stmorph, sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"


def _wall(code: str) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - start, out.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    _wall(CHECK)  # warm the file cache and the bytecode
    empty = min(_wall("pass")[0] for _ in range(args.repeats))
    runs = [_wall(CHECK) for _ in range(args.repeats)]
    times = [t - empty for t, _ in runs]
    loaded = runs[-1][1] or "none"
    print(f"import stmorph: median {statistics.median(times):.2f} s, min {min(times):.2f} s over {args.repeats} runs")
    print(f"heavy modules imported by it ({', '.join(HEAVY)}): {loaded}")


if __name__ == "__main__":
    main()
