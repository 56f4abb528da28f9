"""The command line's writers: a second writer's message and exit status, `xmodal
repair` on a damaged store, and a damaged table named in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from xmodal.search.store.writer_lock import WriterLock


@pytest.fixture
def library(make_image, tmp_path) -> Path:
    lib = tmp_path / "lib"
    for i in range(6):
        make_image(lib / f"{i}.jpg", seed=i, size=(64, 48))
    return lib


def test_a_second_writer_exits_75_with_one_line(xmodal, library, tiny_spec, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    # This lock object stands for another process: flock locks of two objects conflict.
    with WriterLock(data).holding():
        code, _, err = xmodal("index", str(library), "--model", tiny_spec, "--no-wait")
        assert code == 75
        assert err.startswith("error: another writer holds") and f"pid {os.getpid()}" in err
        assert len(err.strip().splitlines()) == 1
        code, _, err = xmodal("index", str(library), "--model", tiny_spec, "--wait", "0.5")
        assert code == 75 and "after waiting 0.5 s" in err
        assert err.count("waiting for another writer") == 1
    code, out, err = xmodal("index", str(library), "--model", tiny_spec, "--no-wait", "--json")
    assert code == 0, err
    assert json.loads(out)["indexed"] == 6
    assert "waiting" not in err
    with WriterLock(data).holding():
        for command in (("reindex",), ("repair",)):
            code, _, err = xmodal(*command, "--no-wait")
            assert code == 75 and "another writer holds" in err, command
        # Readers never take the lock.
        code, out, _ = xmodal("search", "a photo", "--no-server", "--json")
        assert code == 0 and json.loads(out)["hits"]


def newest_manifest(table: Path) -> Path:
    """The manifest of a Lance table's newest version (V2 names count down)."""
    names = sorted((table / "_versions").glob("*.manifest"), key=lambda p: int(p.stem))
    return names[0] if int(names[0].stem) >= 2**63 else names[-1]


def test_a_truncated_table_is_named_in_one_line_and_repaired(
    xmodal, library, tiny_spec, make_image, tmp_path
):
    data = tmp_path / "data"
    assert xmodal("index", str(library), "--model", tiny_spec, "--json")[0] == 0
    for i in range(6, 9):
        make_image(library / f"{i}.jpg", seed=i, size=(64, 48))
    assert xmodal("index", str(library), "--json")[0] == 0
    # The last commit of the second run, cut short (a power cut, a full disk).
    manifest = newest_manifest(data / "lance" / "items.lance")
    manifest.write_bytes(manifest.read_bytes()[:100])
    for command in (("search", "a photo", "--no-server"), ("info",), ("index", str(library))):
        code, out, err = xmodal(*command)
        assert code == 2, (command, out, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "the items table" in err and "xmodal repair" in err
    code, out, err = xmodal("repair", "--json")
    assert code == 0, err
    tables = {t["table"]: t for t in json.loads(out)["tables"]}
    restored = tables["items"]
    # An older version that reads in full: the second run's items, or (when its last
    # commit was the damaged one) only the first run's.
    kept = restored["rows_after"]
    assert restored["state"] == "restored" and kept in (6, 9)
    assert restored["restored_version"] < restored["damaged_version"]
    assert all(t["state"] == "ok" for name, t in tables.items() if name != "items")
    assert (data / restored["set_aside"][0]).is_file()  # moved aside, not deleted
    code, out, _ = xmodal("search", "a photo", "-k", "20", "--no-server", "--json")
    assert code == 0 and len(json.loads(out)["hits"]) == kept
    # The next run indexes what the restore lost, and nothing twice.
    code, out, _ = xmodal("index", str(library), "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["indexed"], report["unchanged"]) == (9 - kept, kept)
    code, out, _ = xmodal("search", "a photo", "-k", "20", "--no-server", "--json")
    assert len(json.loads(out)["hits"]) == 9
    code, out, _ = xmodal("repair")
    assert code == 0 and "nothing to repair" in out
