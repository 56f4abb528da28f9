"""A run killed with SIGKILL (no cleanup at all) resumes exactly, in a library that
holds what the jail skips and names that are not UTF-8."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from xmodal.indexer import index_paths
from xmodal.search import Engine, Store

ROOT = Path(__file__).resolve().parents[2]
# The child indexes in batches of 4 items and kills itself with SIGKILL as the second
# batch's item rows are about to be written (its segments already are).
CHILD = """
import os, signal, sys
from xmodal.indexer import IndexOptions, index_paths
from xmodal.search import Engine
from xmodal.search.store import Store

writes = 0
real = Store.upsert_items

def upsert_then_die(self, records):
    global writes
    writes += 1
    if writes == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, records)

Store.upsert_items = upsert_then_die
engine = Engine.open(sys.argv[1], model=sys.argv[2], device="cpu", audio_model="none")
index_paths(engine, [sys.argv[3]], IndexOptions(write_batch_size=4, batch_size=4, decode_workers=1))
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL, FIFOs and byte names")
def test_sigkill_mid_run_resumes_without_duplicates_or_losses(
    tiny_spec, tiny_encoder, make_image, tmp_path
):
    lib = tmp_path / "lib"
    names = [f"{i}.jpg" for i in range(7)] + [os.fsdecode(b"caf\xe9-%d.jpg" % i) for i in range(3)]
    for seed, name in enumerate(names):
        make_image(lib / name, seed=seed)
    (lib / "passwd.jpg").symlink_to("/etc/passwd")
    os.mkfifo(lib / "pipe.mp4")
    data = tmp_path / "data"
    killed = subprocess.run(
        [sys.executable, "-c", CHILD, str(data), tiny_spec, str(lib)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    store = Store(data)
    assert store.items_table(["id"]).num_rows == 4  # the first batch, committed

    engine = Engine(store, tiny_encoder)
    report = index_paths(engine, [lib])
    assert (report.indexed, report.unchanged, report.failed) == (6, 4, [])
    assert len(report.skipped) == 2
    ids = store.items_table(["id"]).column("id").to_pylist()
    segments = store.segments_table("image-text").column("item_id").to_pylist()
    assert len(ids) == len(set(ids)) == 10
    assert sorted(segments) == sorted(ids)  # one vector per item: no orphans, none twice
    again = index_paths(engine, [lib])
    assert (again.indexed, again.unchanged, again.removed) == (0, 10, 0)
