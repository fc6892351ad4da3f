"""Two PyTorch jobs on the same few cores: OpenMP's waiting policy decides whether they share or thrash.

PyTorch's CPU kernels run on OpenMP threads (``torch.get_num_threads()``, one per core by default). Between
parallel regions GNU OpenMP's threads spin for a while before they sleep (``OMP_WAIT_POLICY=ACTIVE``-like by
default), which is fastest for one job alone and wasteful when two jobs (two runs, a run and an evaluation, a
sweep's trials side by side) share the cores: each spins on cores the other needs. This script times the same
small conv-net forward + backward loop alone and as two processes at once, under the default policy and under
``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once), and prints the iterations/s and the pair's share of the
solo rate.

    python benchmarks/shared_cores.py --seconds 15
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys

WORK = """
import sys, time, torch
m = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, padding=1))
x = torch.randn(64, 3, 28, 28)
m(x).sum().backward()
t, n = time.perf_counter(), 0
while time.perf_counter() - t < float(sys.argv[1]):
    m(x).sum().backward()
    n += 1
print(n / (time.perf_counter() - t))
"""


def rate(processes: int, seconds: float, policy: str | None) -> list[float]:
    """Iterations/s of each of ``processes`` copies of the loop run at once."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    procs = [
        subprocess.Popen([sys.executable, "-c", WORK, str(seconds)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    return [float(p.communicate()[0]) for p in procs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each timing runs")
    args = parser.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}")
    print(f"{'policy':<10} {'alone it/s':>10} {'pair it/s (sum)':>16} {'pair / alone':>12}")
    for name, policy in (("default", None), ("PASSIVE", "PASSIVE")):
        alone = rate(1, args.seconds, policy)[0]
        pair = sum(rate(2, args.seconds, policy))
        print(f"{name:<10} {alone:>10.1f} {pair:>16.1f} {pair / alone:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
