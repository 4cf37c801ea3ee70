"""Benchmark: evaluate programs of 1, 10 and 50 control planes under the mock runtime.

Each size runs in a fresh process and reports wall time, resources registered and peak RSS.
The mocks make real keys and certificates (ECDSA P-256, one RSA-2048 service-account key per
control plane), so the figures include that crypto work, as a real `pulumi up` would.

    python -m benchmarks.evaluate [SIZES...]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)


def measure_one(count: int) -> dict[str, float]:
    from tests.harness import run_program

    os.environ["BENCH_CONTROL_PLANES"] = str(count)
    started = time.perf_counter()
    run = run_program(program=os.path.join(HERE, "many_control_planes.py"))
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "control_planes": count,
        "resources": len(run.resources),
        "seconds": round(elapsed, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(measure_one(int(argv[1]))))
        return
    sizes = [int(a) for a in argv] or [1, 10, 50]
    print(f"{'control planes':>15} {'resources':>10} {'seconds':>8} {'s/plane':>8} {'peak MiB':>9}")
    for size in sizes:
        output = subprocess.run(
            [sys.executable, "-m", "benchmarks.evaluate", "--one", str(size)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row = json.loads(output.strip().splitlines()[-1])
        print(
            f"{row['control_planes']:>15} {row['resources']:>10} {row['seconds']:>8} "
            f"{row['seconds'] / size:>8.3f} {row['peak_rss_mib']:>9}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
