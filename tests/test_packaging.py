"""What `pip install xmodal` installs: one top-level package, with what the installed
program needs (reference models, demo generators), and nothing of the repository's
development folders."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_holds_one_namespace_and_what_the_program_needs(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("xmodal-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"xmodal", next(t for t in top if t.endswith(".dist-info"))}
    for needed in (
        "xmodal/__init__.py",
        "xmodal/search/engine.py",
        "xmodal/search/space/ranking.py",
        "xmodal/search/media/kinds.py",
        "xmodal/indexer/pipeline.py",
        "xmodal/api/cli.py",
        "xmodal/web/__init__.py",
        "xmodal/web/static/index.html",  # the search page, served by the API
        "xmodal/web/static/app.js",
        "xmodal/web/static/style.css",
        "xmodal/web/static/widget.js",  # served at /widget.js
        "xmodal/synthetic/shapes.py",  # the demo's generators
        "xmodal/search/models/xmodal-ref.pt",  # the reference models
        "xmodal/search/models/xmodal-ref-audio/model.safetensors",
        "xmodal/search/models/xmodal-ref-vlm/model.safetensors",
        "xmodal/search/models/xmodal-ref-vlm/chat_template.jinja",
        "xmodal/search/model_configs/xmodal-ref.json",
    ):
        assert needed in names, needed
    assert not [n for n in names if "/training/" in n or "/bench/" in n or "/tests/" in n]
    assert not [n for n in names if "__pycache__" in n]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "xmodal = xmodal.api.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
