"""How long the spec commands of ``xbuild`` take from start to exit, next to what torch costs.

Spec work (validate, list, schema, diff, compile without --out) needs the plan, not torch, so a
pre-commit hook or an editor can run it on every save. Each command runs ``--repeats`` times as
a fresh process (the ``xbuild`` next to this interpreter), interleaved so that a busy moment of
the machine does not land on one command only; the figures are the median and the fastest run
of wall-clock time. ``python -c pass`` and ``python -c "import torch"`` are the yardsticks.

Usage: python benchmarks/cli_startup.py [--repeats 15]
The machine (CPU count, load average) is printed with the figures: on a shared machine they vary.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from exporters.bench.timing import measure_interleaved

ROOT = Path(__file__).resolve().parents[1]
XBUILD = str(Path(sys.executable).with_name("xbuild"))

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "xbuild validate specs/xception.yaml": [XBUILD, "validate", "specs/xception.yaml"],
    "xbuild validate specs/*.yaml (11 specs)": [XBUILD, "validate", *sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "specs").glob("*.yaml"))],
    "xbuild compile xception65": [XBUILD, "compile", "xception65"],
    "xbuild list": [XBUILD, "list"],
    "xbuild schema": [XBUILD, "schema"],
    "xbuild diff xception41 xception65": [XBUILD, "diff", "xception41", "xception65"],
}
BUILDS = "xbuild compile xception_cifar --out DIR (builds: imports torch)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        commands = {**COMMANDS, BUILDS: [XBUILD, "compile", "xception_cifar", "--out", out]}
        times = measure_interleaved(
            {name: functools.partial(subprocess.run, command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL) for name, command in commands.items()},
            lambda: None, warmup=0, reps=args.repeats)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load}, Python {sys.version.split()[0]}, "
          f"{args.repeats} runs each")
    width = max(map(len, times))
    print(f"{'command':<{width}}  {'median s':>8}  {'fastest s':>9}")
    for name, timing in times.items():
        print(f"{name:<{width}}  {timing.p50:8.3f}  {timing.best:9.3f}")


if __name__ == "__main__":
    main()
