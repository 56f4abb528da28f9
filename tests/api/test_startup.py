"""Start-up: the cheap commands never import the models' libraries, and `xmodal search`
asks a running server of the same data directory instead of loading the models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from xmodal.api.server_link import SERVER_FILE, announced_server, write_server_file

HEAVY = ("torch", "open_clip", "transformers")


def run_cli_in_subprocess(*args: str, env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """`xmodal ARGS` in a fresh interpreter: (stdout, the heavy modules it imported)."""
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.argv = ["xmodal", *{list(args)!r}]
        from xmodal.api.cli import main
        try:
            main()
        except SystemExit as done:
            assert not done.code, done.code
        print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


@pytest.fixture
def indexed(xmodal, make_image, tiny_spec, tmp_path) -> Path:
    """A store of six images (two red, by metadata) built with the tiny model; returns its
    data directory."""
    lib = tmp_path / "lib"
    for i in range(6):
        make_image(lib / f"{i}.jpg", seed=i)
    (tmp_path / "meta.csv").write_text(
        "file,colour\n"
        + "".join(f"{lib / f'{i}.jpg'},{'red' if i < 2 else 'blue'}\n" for i in range(6))
    )
    code, _, err = xmodal(
        "index", str(lib), "--model", tiny_spec, "--metadata", str(tmp_path / "meta.csv")
    )
    assert code == 0, err
    return tmp_path / "data"


def test_help_info_and_models_never_import_the_model_libraries(indexed):
    out, heavy = run_cli_in_subprocess("--help")
    assert "search" in out and heavy == []
    out, heavy = run_cli_in_subprocess("models")
    # The families are registered all the same.
    assert {"open_clip:", "clap:", "xmodal-ref"} <= set(out.split()) and heavy == []
    out, heavy = run_cli_in_subprocess("info", "--data", str(indexed))
    assert "image-text" in out and heavy == []
    out, heavy = run_cli_in_subprocess("info", "--json", env={"XMODAL_DATA": str(indexed)})
    assert json.loads(out)["items"] == {"image/indexed": 6} and heavy == []


@pytest.fixture
def server(indexed):
    """`xmodal serve` of the store, in a thread on a free port of 127.0.0.1; yields its
    URL, and stops it."""
    from xmodal.api.app import create_app
    from xmodal.api.settings import Settings

    app = create_app(Settings(data=indexed))
    app.state.engine.warm()
    urls: list[str] = []
    running = announced_server(app, indexed, "127.0.0.1", 0, urls.append)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not urls and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert urls and (indexed / SERVER_FILE).is_file()
    yield urls[0]
    running.should_exit = True
    thread.join(30)
    assert not thread.is_alive()
    assert not (indexed / SERVER_FILE).exists()  # withdrawn on shutdown


def hits(out: str) -> list[tuple[str, float]]:
    return [(hit["id"], round(hit["score"], 5)) for hit in json.loads(out)["hits"]]


def test_search_goes_through_the_running_server(xmodal, indexed, server):
    record = json.loads((indexed / SERVER_FILE).read_text())
    assert record["pid"] == os.getpid() and record["data"] == str(indexed.resolve())
    assert server == f"http://127.0.0.1:{record['port']}"
    lib = indexed.parent / "lib"
    queries = [
        ("a photo", "-k", "4"),
        ("a photo", "--filter", '{"colour": "red"}', "--kind", "image"),
        ("--image", str(lib / "2.jpg"), "-k", "3"),
        ("--image", str(lib / "2.jpg"), "--filter", '{"colour": "blue"}', "--offset", "1"),
        ("--similar", json.loads(xmodal("search", "a photo", "--json")[1])["hits"][0]["id"]),
    ]
    for query in queries:
        code, out, err = xmodal("search", *query, "--json")
        assert code == 0, err
        assert err.startswith(f"answered by the server at {server} in "), (query, err)
        code, local, err = xmodal("search", *query, "--json", "--no-server")
        assert code == 0 and err.startswith("answered in-process in "), (query, err)
        assert hits(out) == hits(local) and hits(out), query

    code, out, _ = xmodal("search", "a photo", "-k", "2")
    assert code == 0 and "2 result(s)" in out
    assert out.rstrip().splitlines()[-1].startswith(f"answered by the server at {server} in ")
    # --audio-model none matches a server without sound; its errors are the same one line.
    assert xmodal("search", "a photo", "--audio-model", "none", "--json")[0] == 0
    code, _, err = xmodal("search", "--similar", "0000000000000000")
    assert code == 2 and err == "error: no item with id '0000000000000000'\n"
    code, _, err = xmodal("search", "x", "--filter", '{"colour": {"$bad": 1}}')
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_a_server_with_another_model_is_not_used(xmodal, indexed, server, tmp_path):
    import open_clip
    import torch

    torch.manual_seed(3)
    other = tmp_path / "other.pt"
    torch.save(open_clip.create_model("xmodal-tiny").state_dict(), other)
    code, _, err = xmodal("search", "a photo", "--model", f"open_clip:xmodal-tiny/{other}")
    # In-process, where the store refuses that model.
    assert code == 2 and "was built with" in err


def test_a_stale_server_file_is_ignored(xmodal, indexed):
    path = indexed / SERVER_FILE
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(gone.stdout)
    write_server_file(indexed, "127.0.0.1", 9)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "pid": dead_pid}))
    code, out, err = xmodal("search", "a photo", "--json")
    assert code == 0 and len(json.loads(out)["hits"]) == 6
    assert err.startswith("answered in-process in ") and "stale" in err
    assert not path.exists()

    # A live process whose port does not answer (this one, port 9): ignored, left alone.
    write_server_file(indexed, "127.0.0.1", 9)
    code, out, err = xmodal("search", "a photo", "--json")
    assert code == 0 and err.startswith("answered in-process in ") and "did not answer" in err
    assert path.exists()

    # Another data directory's server, even a live one, is not asked.
    path.write_text(json.dumps({**record, "data": str(indexed.parent / "elsewhere")}))
    code, _, err = xmodal("search", "a photo", "--json")
    assert code == 0 and err.startswith("answered in-process in ")

    # A file naming another machine (forged, or hand-edited): never asked, whatever it says.
    for host in ("192.0.2.7", "example.com"):
        path.write_text(json.dumps({**record, "pid": os.getpid(), "host": host}))
        code, _, err = xmodal("search", "a photo", "--json")
        assert code == 0 and "not a loopback address" in err


@pytest.mark.slow
def test_xmodal_serve_announces_itself_until_terminated(xmodal, indexed):
    """The real command in its own process: server.json appears once the port is open,
    and goes when the server is stopped with SIGTERM (uvicorn re-raises it on the way out,
    so the file is removed during shutdown)."""
    import signal

    path = indexed / SERVER_FILE
    serving = subprocess.Popen(
        [sys.executable, "-m", "xmodal.api.cli", "serve", "--port", "0", "--data", str(indexed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not path.exists() and serving.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert path.exists(), serving.stdout.read() if serving.poll() is not None else "slow"
        record = json.loads(path.read_text())
        assert record["pid"] == serving.pid
        code, out, err = xmodal("search", "a photo", "-k", "2", "--json")
        url = f"http://127.0.0.1:{record['port']}"
        assert code == 0 and err.startswith(f"answered by the server at {url} in ")
        assert len(json.loads(out)["hits"]) == 2
        serving.send_signal(signal.SIGTERM)
        serving.wait(60)
        assert not path.exists()
        assert f"serving {indexed} on {url}" in (serving.stdout.read() if serving.stdout else "")
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.wait()
