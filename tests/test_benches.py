"""Every benchmark runs, in its smoke mode (tiny sizes, offline models), and prints its
figures: a bench that no longer runs fails the suite instead of rotting unseen. Smoke
runs say nothing about speed; the figures come from full runs (docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

# A bench's figures, as its output shows them: a line a broken bench would not print.
FIGURES = {
    "ann.py": "=== n=5,000 ===",
    "api_latency.py": "saturation:",
    "audio_throughput.py": "end to end: index_paths",
    "calibration.py": "min_score 3: nonsense returning hits",
    "filters.py": "sku $in 50 (metadata)",
    "index_throughput.py": "cold: steady state / model-only =",
    "ingest.py": "URL ingestion / local-file ingestion =",
    "live_latency.py": "live p99 / idle p99 =",
    "migrate_load.py": "errors during the migration:",
    "ray_index.py": "Ray / local =",
    "rerank.py": "(target <= 150 ms):",
    "text_batching.py": "batched/plain",
    "video_keyframes.py": "segments span",
}


def test_every_bench_has_a_smoke_run():
    scripts = {path.name for path in BENCH.glob("*.py") if not path.name.startswith("_")}
    assert scripts == set(FIGURES), "give each bench a --smoke mode and a line in FIGURES"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(FIGURES))
def test_the_bench_runs_in_its_smoke_mode(script):
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert FIGURES[script] in output, output[-3000:]
