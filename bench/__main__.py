"""``make bench``: every benchmark in turn. Each prints its ratio against the floor it measures."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["bench.add_participant", "bench.bulk_upload", "bench.extract"]


def main() -> None:
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            print(f"{name}: not present")
            continue
        sys.argv = [name]
        module.main()
        print()


if __name__ == "__main__":
    main()
