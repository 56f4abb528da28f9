"""`xmodal migrate`: the whole round (migrate, status, info, search, rollback, drop) and
its refusals, through the command line."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def indexed(xmodal, make_image, tmp_path, tiny_spec):
    lib = tmp_path / "lib"
    for i in range(4):
        make_image(lib / f"{i}.jpg", seed=i)
    code, _, err = xmodal("index", str(lib), "--model", tiny_spec, "--json")
    assert code == 0, err
    return lib


def scores(xmodal) -> list[float]:
    code, out, err = xmodal("search", "a photo", "-k", "4", "--json", "--no-server")
    assert code == 0, err
    return [hit["score"] for hit in json.loads(out)["hits"]]


def test_migrate_status_rollback_and_drop(xmodal, indexed, tiny_spec, other_tiny_spec):
    before = scores(xmodal)
    code, out, err = xmodal("migrate", "--model", other_tiny_spec)
    assert code == 0, err
    assert "embedded 4" in out and "switched" in out and "--rollback" in out

    code, out, _ = xmodal("info", "--json")
    info = json.loads(out)
    assert info["spaces"][0]["model_spec"] == other_tiny_spec
    [migration] = info["migrations"]
    assert migration["state"] == "switched" and migration["old_model"] == tiny_spec
    assert (migration["done"], migration["total"]) == (4, 4)
    code, out, _ = xmodal("info")
    assert f"switched to {other_tiny_spec}" in out
    after = scores(xmodal)
    assert len(after) == 4 and after != before

    code, out, _ = xmodal("migrate", "--status", "--json")
    assert code == 0 and json.loads(out)[0]["new_model"] == other_tiny_spec

    code, out, err = xmodal("migrate", "--rollback", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["switched"] and report["new_model"] == tiny_spec and report["embedded"] == 0
    assert scores(xmodal) == before

    code, out, err = xmodal("migrate", "--drop-old")
    assert code == 0 and "deleted the vectors of " + other_tiny_spec in out, err
    code, out, _ = xmodal("migrate", "--status")
    assert code == 0 and "no migration" in out
    code, out, _ = xmodal("info", "--json")
    assert json.loads(out)["migrations"] == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--model", "no-such-model"), "unknown model spec 'no-such-model'"),
        (("--model", "TINY"), "already uses"),
        (("--rollback",), "nothing to roll back"),
        (("--drop-old",), "nothing to drop"),
        (("--abandon",), "nothing to abandon"),
        ((), "say what to do"),
        (("--rollback", "--drop-old"), "not --rollback and --drop-old together"),
    ],
)
def test_refusals_exit_2_with_one_line(xmodal, indexed, tiny_spec, args, says):
    args = tuple(tiny_spec if a == "TINY" else a for a in args)
    code, _, err = xmodal("migrate", *args)
    assert code == 2 and err.startswith("error: ") and says in err, err
    assert err.count("\n") == 1, err
