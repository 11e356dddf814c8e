"""Run every benchmark module: ``python -m benchmarks [--smoke] [--only NAME] [--out FILE]``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from benchmarks.harness import Harness


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--smoke", action="store_true", help="tiny workloads: checks the harness")
    parser.add_argument("--only", action="append", default=[], help="run only bench_NAME")
    parser.add_argument("--out", default="bench/results.json", help="where to write the JSON")
    args = parser.parse_args()
    harness = Harness(smoke=args.smoke)
    folder = Path(__file__).parent
    names = sorted(
        m.name for m in pkgutil.iter_modules([str(folder)]) if m.name.startswith("bench_")
    )
    if args.only:
        names = [n for n in names if n.removeprefix("bench_") in args.only or n in args.only]
    failed = []
    for name in names:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        try:
            module.run(harness)
        except Exception as exc:  # report every module, then fail the run
            failed.append(name)
            print(f"!! {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    harness.write(Path(args.out))
    print(f"wrote {args.out} ({len(harness.metrics)} metrics)")
    return 1 if failed or not harness.metrics else 0


if __name__ == "__main__":
    sys.exit(main())
