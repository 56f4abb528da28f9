"""Shared by the benchmarks: CPU accounting per phase, scratch folders, the smoke mode."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any


class CpuMeter:
    """Wall time, this process's CPU time and other processes' CPU time.

    A benchmark is only meaningful on an otherwise idle machine: other processes' CPU
    time (from /proc/stat, Linux only) is reported for every phase.
    """

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.own = _own_cpu()
        self.machine = _machine_busy()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        own = _own_cpu() - self.own
        end = _machine_busy()
        machine = end - self.machine if end is not None and self.machine is not None else own
        foreign = max(0.0, machine - own)
        return {
            "wall": wall,
            "own": own,
            "foreign": foreign,
            "foreign_share": foreign / (wall * (os.cpu_count() or 1)),
        }


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _machine_busy() -> float | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def parse_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, **smoke: Any
) -> argparse.Namespace:
    """Parse with a `--smoke` flag: tiny sizes and offline models (`smoke`, the options'
    values in that mode; options given explicitly still win). A smoke run checks that the
    bench works end to end and prints its figures, never how fast: `make test` runs
    every bench so (tests/test_benches.py), so that none rots unseen."""
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, seconds, offline models: check that the bench runs (figures meaningless)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        parser.set_defaults(**smoke)
        args = parser.parse_args(argv)
    return args
