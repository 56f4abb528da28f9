"""One writer at a time: concurrent `xmodal index` runs on one data directory, as real
processes through the command line.

Before the writer lock, two runs started a second apart either died with a Lance
"commit conflict" traceback or both embedded every file (and could leave duplicate
rows); now the later ones wait and find everything unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lancedb
import pytest

CLI = "import sys; from xmodal.api.cli import main; sys.argv[0] = 'xmodal'; main()"
FILES = 12


@pytest.fixture
def library(make_image, tmp_path) -> Path:
    lib = tmp_path / "lib"
    for i in range(FILES):
        make_image(lib / f"{i:02d}.jpg", seed=i, size=(64, 48))
    return lib


def start_index(library: Path, data: Path, spec: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env.pop("XMODAL_DATA", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLI,
            "index",
            str(library),
            "--data",
            str(data),
            "--model",
            spec,
            "--json",
            "--workers",
            "1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def run_concurrently(library: Path, data: Path, spec: str, runs: int) -> list[tuple[int, str, str]]:
    processes = []
    for _ in range(runs):
        processes.append(start_index(library, data, spec))
        time.sleep(0.3)
    return [(p.wait(timeout=600), *p.communicate(timeout=60)) for p in processes]


def store_rows(data: Path) -> tuple[list[str], list[str]]:
    db = lancedb.connect(data / "lance")
    items = db.open_table("items").to_arrow().column("id").to_pylist()
    segments = db.open_table("segments_image_text").to_arrow().column("id").to_pylist()
    return items, segments


@pytest.mark.parametrize("runs", [2, 5])
def test_concurrent_index_runs_embed_each_file_once(library, tiny_spec, tmp_path, runs):
    data = tmp_path / "data"
    results = run_concurrently(library, data, tiny_spec, runs)
    for code, out, err in results:
        assert code == 0, err
        assert "Traceback" not in out + err
    reports = [json.loads(out) for _, out, _ in results]
    # Exactly one run embedded the files; the others waited and found them unchanged.
    assert sorted(r["indexed"] for r in reports) == [0] * (runs - 1) + [FILES]
    assert sorted(r["unchanged"] for r in reports) == [0] + [FILES] * (runs - 1)
    waited = [err for _, _, err in results if "waiting for another writer" in err]
    assert waited and all("pid " in err and err.count("waiting for") == 1 for err in waited)
    items, segments = store_rows(data)
    assert len(items) == len(set(items)) == FILES
    assert len(segments) == len(set(segments)) == FILES
