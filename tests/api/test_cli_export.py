"""`xmodal export` on the command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def test_export_writes_both_layouts_and_refuses_to_overwrite(
    xmodal, make_image, tiny_spec, tmp_path
):
    lib = tmp_path / "lib"
    for i in range(3):
        make_image(lib / f"{i}.jpg", seed=i)
    assert xmodal("index", str(lib), "--model", tiny_spec, "--json")[0] == 0
    out = tmp_path / "export"

    code, stdout, _ = xmodal("export", str(out), "--format", "both", "--space", "image-text")
    assert code == 0
    assert "exported 3 item(s)" in stdout and "image-text: 3 vector(s) of 3 item(s)" in stdout
    vectors = np.load(out / "image-text" / "img_emb" / "img_emb_0.npy")
    metadata = pd.read_parquet(out / "image-text" / "metadata" / "metadata_0.parquet")
    assert vectors.shape == (3, 32) and len(metadata) == 3
    assert (out / "image-text" / "embeddings.parquet").is_file()

    code, _, err = xmodal("export", str(out))
    assert code == 2 and err.startswith("error: ") and "--force" in err and err.count("\n") == 1

    code, stdout, _ = xmodal(
        "export", str(out), "--force", "--format", "both", "--filter", '{"uri": "nothing"}'
    )
    assert code == 0 and "exported 0 item(s)" in stdout
    assert np.load(out / "image-text" / "img_emb" / "img_emb_0.npy").shape == (0, 32)
    report = json.loads(xmodal("export", str(out), "--force", "--json")[1])
    assert report["items"] == 3 and report["spaces"]["image-text"]["segments"] == 3

    code, _, err = xmodal("export", str(tmp_path / "audio"), "--space", "audio-text")
    assert code == 2 and "holds no audio-text space" in err
    assert not (tmp_path / "audio").exists()
