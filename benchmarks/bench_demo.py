"""Wall time and peak memory of the demo (``stmorph demo``) on the HER2ST sections.

Run:  .venv/bin/python benchmarks/bench_demo.py [--out /tmp/stmorph_demo_bench] [--sections C2 C3 C4 C5]

Prints the time of each step (load + embed + EPS, predict + evaluate, write + plot), the total, the
CPU time of the process (the demo runs torch on one thread, so on an idle machine the wall time is
about this), its peak resident memory, the CPU count and the load average at the start.
"""

from __future__ import annotations

import argparse
import os
import resource
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/stmorph_demo_bench")
    parser.add_argument("--sections", nargs="+", default=["C2", "C3", "C4", "C5"])
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    from stmorph._demo import run_demo_steps

    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = run_demo_steps(args.out, args.sections, progress=False)
    total = time.perf_counter() - start
    for step, seconds in result.timings.items():
        print(f"{step:<22} {seconds:7.1f} s")
    print(f"{'total':<22} {total:7.1f} s  ({total / 60:.1f} min)")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    print(f"{'CPU time (user+sys)':<22} {cpu:7.1f} s  ({cpu / 60:.1f} min)")
    print(f"peak RSS               {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:7.2f} GiB")
    print(f"CPUs {os.cpu_count()}, load average at start {load:.1f}; report: {result.report}")


if __name__ == "__main__":
    main()
