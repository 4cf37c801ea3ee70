"""Benchmark: evaluate programs of 1, 10 and 50 control planes under the mock runtime.

Each size runs in a fresh process and reports wall time, resources registered and peak RSS,
beside a reference measured in the same run (the program with no control plane), and what
each control plane adds to it.
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


def run_one(size: int) -> dict[str, float]:
    """measure_one in a fresh process, so that peak RSS is this size's alone."""
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.evaluate", "--one", str(size)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    row: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return row


def per_plane(row: dict[str, float], reference: dict[str, float]) -> dict[str, float]:
    """What each control plane adds to the reference (the program with none, same run)."""
    size = row["control_planes"] or 1
    return {
        "seconds": (row["seconds"] - reference["seconds"]) / size,
        "peak_rss_mib": (row["peak_rss_mib"] - reference["peak_rss_mib"]) / size,
    }


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(measure_one(int(argv[1]))))
        return
    sizes = [int(a) for a in argv] or [1, 10, 50]
    # The reference: the same program with no control plane (interpreter, Pulumi, the mocks),
    # measured in this run, so the per-plane columns do not depend on the machine's baseline.
    reference = run_one(0)
    print(
        f"{'control planes':>15} {'resources':>10} {'seconds':>8} {'peak MiB':>9}"
        f" {'s/plane':>8} {'MiB/plane':>10}"
    )
    print(
        f"{'0 (reference)':>15} {reference['resources']:>10} {reference['seconds']:>8}"
        f" {reference['peak_rss_mib']:>9} {'':>8} {'':>10}"
    )
    for size in sizes:
        row = run_one(size)
        added = per_plane(row, reference)
        print(
            f"{row['control_planes']:>15} {row['resources']:>10} {row['seconds']:>8}"
            f" {row['peak_rss_mib']:>9} {added['seconds']:>8.3f} {added['peak_rss_mib']:>10.1f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
