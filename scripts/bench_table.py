#!/usr/bin/env python3
"""Thin wrapper: reproduce the seed's measurement table (`kvmharness bench`).

Usage: scripts/bench_table.py [--quick] [--out DIR] [--runs N] [--sizes 1GiB,4GiB]
"""

import sys

from kvmharness.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
