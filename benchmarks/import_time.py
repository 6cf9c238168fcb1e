"""How long `import visionforge` takes in a fresh interpreter, beside bare Python and torch.

Target: under 0.5 s and without importing torch. Each case is a fresh process, best of N.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python (baseline)": "pass",
    "import visionforge": "import visionforge",
    "import + list all components": (
        "import visionforge\nfor r in visionforge.REGISTRIES.all().values(): r.names()"
    ),
    "import torch (for scale)": "import torch",
}
CHECK = "import sys\nassert 'torch' not in sys.modules, 'torch was imported'"


def time_case(code: str, repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        runs.append(time.perf_counter() - start)
    return min(runs), statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    results = {name: time_case(code, args.repeat) for name, code in CASES.items()}
    subprocess.run(
        [sys.executable, "-c", CASES["import + list all components"] + "\n" + CHECK], check=True
    )
    base = results["python (baseline)"][0]
    print(f"{'case':32} {'best s':>8} {'median s':>9} {'over python s':>14}")
    for name, (best, median) in results.items():
        print(f"{name:32} {best:8.3f} {median:9.3f} {best - base:14.3f}")
    ours = results["import visionforge"][0]
    verdict = "OK" if ours < 0.5 else "OVER TARGET"
    print(f"\nimport visionforge: {ours:.3f} s (target < 0.5 s, torch not imported): {verdict}")


if __name__ == "__main__":
    main()
