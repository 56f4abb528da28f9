"""A fuzz pass over image, audio and video decoding, through the real indexer.

Mutants of small valid files of each format (decode_fuzz.py: bit flips, truncations,
header corruption, huge sizes, moved blocks, zeroed runs; a fixed seed and count) are
indexed in a child process with the tiny models. Every input must end indexed or
recorded with a reason, no decode may run past the per-file timeout, and the child's
peak memory must stay under a bound.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.indexer.decode_fuzz import KIND_OF, MUTANTS_PER_SEED, SEEDS, write_corpus

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0  # seconds of decoding per file (setting indexing.decode_timeout)
# What indexing the corpus may add to the child's peak memory once its models are
# loaded (measured: about 1.2 GiB with the models, of which indexing adds little): a
# decoder that believed a corrupt size and allocated for it would show here.
INDEXING_RSS_MIB = 384
CHILD_SECONDS = 240  # the whole child, model loading included: a hang fails here


@pytest.mark.slow
def test_mutated_media_end_indexed_or_recorded_in_bounded_time_and_memory(
    tmp_path, tiny_spec, tiny_clap_dir
):
    library = tmp_path / "fuzz"
    formats = write_corpus(library)
    assert len(formats) == len(SEEDS) * 2 * (1 + MUTANTS_PER_SEED)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.indexer.decode_fuzz",
            "index",
            str(library),
            tiny_spec,
            f"clap:local-dir:{tiny_clap_dir}",
            str(TIMEOUT),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    items, failed = result["items"], result["failed"]

    outcomes: Counter[tuple[str, str]] = Counter()
    for name, fmt in formats.items():
        assert name in items or name in result["skipped"], f"{name} left no record"
        status, error = items[name]
        if status == "failed":
            assert failed.get(name) and error, f"{name} failed without a reason"
            assert not error.startswith("unexpected"), f"{name}: {error}"
        outcomes[(fmt, status)] += 1
    seeds = {n for n in formats if n.count("-") == 1}
    assert all(items[n][0] == "indexed" for n in seeds), "a valid seed file was not indexed"

    seconds = result["decode_seconds"]
    slowest = max(seconds, key=seconds.get)
    assert seconds[slowest] <= TIMEOUT + 2.0, f"{slowest} decoded for {seconds[slowest]:.1f} s"
    grown = result["peak_rss_mib"] - result["loaded_rss_mib"]
    assert grown <= INDEXING_RSS_MIB, f"indexing took the peak {grown:.0f} MiB higher"
    by_kind = Counter(
        (KIND_OF[fmt], status) for (fmt, status), n in outcomes.items() for _ in range(n)
    )
    print(
        f"\nfuzz: {len(formats)} inputs, {dict(sorted(outcomes.items()))}, by kind {dict(by_kind)}, "
        f"slowest decode {seconds[slowest]:.2f} s ({slowest}), index {result['wall_seconds']:.1f} s, "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB ({grown:.0f} over the loaded models)"
    )
