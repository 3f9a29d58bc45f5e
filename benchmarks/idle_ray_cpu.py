"""What an idle local Ray costs in CPU: the suite keeps Rays and their worker processes
alive beside the tests, on 2 cores.

Starts a local Ray (``--cpus``, with the dashboard, as the tests' session cluster),
creates ``--actors`` actors that do nothing, waits 10 s, then prints the CPU seconds each
kind of its processes used over ``--seconds`` (from /proc, by process name; Linux only).
Ray's own settings come from the environment, e.g. ``RAY_enable_metrics_collection=0``.

    python benchmarks/idle_ray_cpu.py [--cpus 8] [--actors 8] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

MARK = "FINEGYM_RAY_IDLE_PROBE"


def cpu_by_name() -> Counter:
    """CPU seconds so far of every process whose environment holds MARK, by name."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds: Counter = Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if MARK.encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        seconds[stat[stat.find("(") + 1:stat.rfind(")")]] += (int(fields[11]) + int(fields[12])) / tick
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", type=int, default=8)
    parser.add_argument("--actors", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    os.environ[MARK] = "1"  # inherited by every process of the Ray started below
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=True, configure_logging=False, log_to_driver=False)

    @ray.remote(num_cpus=0)
    class Idle:
        def ping(self) -> int:
            return 1

    actors = [Idle.remote() for _ in range(args.actors)]
    ray.get([a.ping.remote() for a in actors])
    time.sleep(10)
    before = cpu_by_name()
    time.sleep(args.seconds)
    used = cpu_by_name() - before
    print(f"idle Ray, {args.actors} idle actors: {sum(used.values()):.2f} CPU s over {args.seconds:g} s")
    for name, s in used.most_common(8):
        print(f"  {name}: {s:.2f} s")
    ray.shutdown()


if __name__ == "__main__":
    main()
