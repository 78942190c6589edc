"""``make bench``: every benchmark in turn. Each prints its ratio against the floor it measures.

``python -m bench --smoke`` (``make bench-smoke``) runs each at tiny sizes: it checks only that every
script still runs to its ratio line, so a benchmark cannot rot unnoticed (the test suite runs it).
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = [
    "bench.add_participant",
    "bench.bulk_upload",
    "bench.bulk_memory",
    "bench.extract",
    "bench.many_extracts",
    "bench.fairness",
    "bench.costs",
]


def main() -> None:
    smoke = "--smoke" in sys.argv[1:]
    for name in BENCHMARKS:
        module = importlib.import_module(name)
        argv = ["--smoke"] if smoke else []
        sys.argv = [name, *argv]
        module.main(argv)
        print(flush=True)


if __name__ == "__main__":
    main()
