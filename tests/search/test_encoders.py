from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_ARCH, photo
from xmodal.search import ModelLoadError, ModelSpecError, create_encoder, list_encoders
from xmodal.search.encoders import register_encoder
from xmodal.search.encoders.open_clip_encoder import OpenClipSpec


def test_spec_forms_parse():
    assert OpenClipSpec.parse("ViT-B-32/laion2b_s34b_b79k") == OpenClipSpec(
        arch="ViT-B-32", tag="laion2b_s34b_b79k"
    )
    assert OpenClipSpec.parse("ViT-B-32//ckpt/model.pt").checkpoint == Path("/ckpt/model.pt")
    assert OpenClipSpec.parse("ViT-B-32/weights.safetensors").checkpoint == Path(
        "weights.safetensors"
    )
    assert OpenClipSpec.parse("hf-hub:org/name").hub_id == "org/name"


def test_architecture_without_weights_is_refused():
    with pytest.raises(ModelSpecError, match="random weights"):
        create_encoder("open_clip:ViT-B-32")


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("ViT-B-32/laion2b_s34b_b79k", "open_clip:ViT-B-32/laion2b_s34b_b79k"),
        ("nonsense:x", "Known"),
    ],
)
def test_unknown_or_ambiguous_spec_says_what_to_write(spec, hint):
    with pytest.raises(ModelSpecError, match=hint):
        create_encoder(spec)


def test_registry_lists_families_and_refuses_duplicates():
    assert "open_clip:" in list_encoders()
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("open_clip")(lambda rest: None)


def test_local_checkpoint_loads_and_returns_unit_vectors(tiny_encoder):
    images = tiny_encoder.encode_images([photo(1), photo(2, (90, 200))])
    texts = tiny_encoder.encode_texts(["a red circle", "two objects"])
    assert images.shape == (2, 32) and texts.shape == (2, 32)
    assert images.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_identity_follows_checkpoint_content_not_path(tiny_checkpoint, tmp_path):
    moved = tmp_path / "elsewhere.pt"
    moved.write_bytes(tiny_checkpoint.read_bytes())
    a = create_encoder(f"open_clip:{TINY_ARCH}/{tiny_checkpoint}")
    b = create_encoder(f"open_clip:{TINY_ARCH}/{moved}")
    assert a.identity == b.identity and a.identity.startswith(f"open_clip:{TINY_ARCH}/sha256:")


def test_missing_checkpoint_stops_with_clear_error(tmp_path):
    encoder = create_encoder(f"open_clip:{TINY_ARCH}/{tmp_path / 'absent.pt'}")
    with pytest.raises(ModelLoadError, match="not found"):
        encoder.load()


def test_checkpoint_of_another_architecture_is_refused(tiny_checkpoint):
    encoder = create_encoder(f"open_clip:RN50/{tiny_checkpoint}")
    with pytest.raises(ModelLoadError, match="could not load"):
        encoder.load()


def test_unknown_pretrained_tag_lists_known_tags():
    with pytest.raises(ModelSpecError, match="laion2b_s34b_b79k"):
        create_encoder("open_clip:ViT-B-32/no_such_tag").load()


def test_offline_download_failure_names_alternatives(hf_cache):
    encoder = create_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k")
    with pytest.raises(ModelLoadError) as caught:
        encoder.load()
    message = str(caught.value)
    assert "could not be downloaded" in message
    assert "local checkpoint" in message and "Hugging Face cache" in message


def _fake_hub_repo(cache: Path, repo_id: str, files: dict[str, Path | bytes]) -> None:
    """Lay out a Hugging Face cache entry as a real download leaves it."""
    org, name = repo_id.split("/")
    repo = cache / f"models--{org}--{name}"
    revision = "0" * 40
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for filename, content in files.items():
        target = snapshot / filename
        if isinstance(content, Path):
            target.symlink_to(content)
        else:
            target.write_bytes(content)


@pytest.fixture
def tiny_hub_model(hf_cache, tiny_checkpoint):
    """The tiny model as a Hugging Face Hub repository `xmodal-test/tiny-clip` in the
    local cache (open_clip's config and weights files)."""
    import open_clip

    from xmodal.search.encoders.open_clip_encoder import register_builtin_configs

    register_builtin_configs()
    config = {"model_cfg": open_clip.get_model_config(TINY_ARCH), "preprocess_cfg": {}}
    _fake_hub_repo(
        hf_cache,
        "xmodal-test/tiny-clip",
        {
            "open_clip_config.json": json.dumps(config).encode(),
            "open_clip_pytorch_model.bin": tiny_checkpoint,
        },
    )


def test_hf_hub_spec_loads_from_local_cache(tiny_hub_model, tiny_checkpoint):
    encoder = create_encoder("open_clip:hf-hub:xmodal-test/tiny-clip")
    assert encoder.identity == "open_clip:hf-hub:xmodal-test/tiny-clip"
    reference = create_encoder(f"open_clip:{TINY_ARCH}/{tiny_checkpoint}")
    np.testing.assert_allclose(
        encoder.encode_texts(["a cat"]), reference.encode_texts(["a cat"]), atol=1e-5
    )


@pytest.mark.slow
def test_pretrained_tag_resolves_from_hugging_face_cache(tmp_path, hf_cache):
    """`open_clip:ViT-B-32/laion2b_s34b_b79k` loads exactly as after a real download."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = open_clip.create_model("ViT-B-32")
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    _fake_hub_repo(
        hf_cache, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", {"open_clip_model.safetensors": weights}
    )
    encoder = create_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k", device="cpu")
    assert encoder.dim == 512
    vector = encoder.encode_texts(["a photo of a dog"])
    with torch.inference_mode():
        expected = model.encode_text(open_clip.get_tokenizer("ViT-B-32")(["a photo of a dog"]))
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
    np.testing.assert_allclose(vector, expected, atol=1e-4)


RECT_ARCH = "xmodal-test-rect"


@pytest.fixture(scope="session")
def rect_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """xmodal-tiny with a 48x64 (height, width) image input: open_clip's pair form."""
    import open_clip
    import torch

    from xmodal.search.encoders.open_clip_encoder import register_builtin_configs

    register_builtin_configs()
    config = open_clip.get_model_config(TINY_ARCH)
    config["vision_cfg"]["image_size"] = [48, 64]
    folder = tmp_path_factory.mktemp("rect")
    (folder / "configs").mkdir()
    (folder / "configs" / f"{RECT_ARCH}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / "configs")
    torch.manual_seed(0)
    path = folder / "rect.pt"
    torch.save(open_clip.create_model(RECT_ARCH).state_dict(), path)
    return path


@pytest.mark.parametrize(
    ("model", "expected"),
    [("tiny", (64, 64)), ("xmodal-ref", (64, 64)), ("rect", (48, 64))],
)
def test_input_size_answers_from_the_config_without_loading(
    model, expected, tiny_checkpoint, rect_checkpoint
):
    spec = {
        "tiny": f"open_clip:{TINY_ARCH}/{tiny_checkpoint}",
        "rect": f"open_clip:{RECT_ARCH}/{rect_checkpoint}",
    }.get(model, model)
    encoder = create_encoder(spec, device="cpu")
    assert encoder.input_size == expected
    assert encoder._model is None
    encoder.load()
    # What the loaded model's own preprocessing makes of a picture.
    tensor = encoder._preprocess(photo(1, (200, 90)))
    assert tuple(tensor.shape[-2:]) == expected == encoder.input_size


@pytest.mark.parametrize("model", ["tiny", "xmodal-ref", "rect"])
def test_preprocessing_without_the_weights_prepares_as_the_loaded_model(
    model, tiny_checkpoint, rect_checkpoint
):
    # What a Ray decode actor holds: the preprocessing, not the model.
    spec = {
        "tiny": f"open_clip:{TINY_ARCH}/{tiny_checkpoint}",
        "rect": f"open_clip:{RECT_ARCH}/{rect_checkpoint}",
    }.get(model, model)
    light = create_encoder(spec, device="cpu")
    light.load_preprocessing()
    assert light._model is None
    loaded = create_encoder(spec, device="cpu")
    loaded.load()
    # The same settings (a size of 64 and of (64, 64) are one, as open_clip reads them).
    assert same_size(light._preprocess_cfg) == same_size(loaded._preprocess_cfg)
    for picture in (photo(1, (200, 90)), photo(2, (64, 64)), photo(3, (31, 300))):
        np.testing.assert_array_equal(light.prepare_image(picture), loaded.prepare_image(picture))
    assert light._model is None


def same_size(cfg: dict) -> dict:
    size = cfg["size"]
    return {**cfg, "size": tuple(size) if isinstance(size, (tuple, list)) else (size, size)}


def test_a_pretrained_tag_sets_its_preprocessing_without_its_weights():
    # SigLIP's tag squashes to 224 and normalises around 0.5: no download needed to know.
    encoder = create_encoder("open_clip:ViT-B-16-SigLIP/webli", device="cpu")
    encoder.load_preprocessing()
    assert encoder._model is None
    cfg = encoder._preprocess_cfg
    assert (cfg["resize_mode"], cfg["mean"], cfg["size"]) == ("squash", (0.5, 0.5, 0.5), (224, 224))
    assert encoder.prepare_image(photo(1, (300, 100))).shape == (224, 224, 3)


def test_a_hub_model_loads_for_its_preprocessing(tiny_hub_model):
    encoder = create_encoder("open_clip:hf-hub:xmodal-test/tiny-clip", device="cpu")
    encoder.load_preprocessing()  # its settings come with its weights
    assert encoder._model is not None


def test_input_size_of_a_hub_model_loads_it(tiny_hub_model):
    encoder = create_encoder("open_clip:hf-hub:xmodal-test/tiny-clip", device="cpu")
    assert encoder.input_size == (64, 64)  # no architecture to look up: the model answers
    assert encoder._model is not None


def test_dimension_and_input_size_come_from_the_config_without_importing_open_clip():
    """Checking a store's space and a re-run with nothing to embed need no model: the
    architecture's JSON config answers, as open_clip itself would."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from xmodal.search import create_encoder\n"
        "e = create_encoder('open_clip:ViT-B-32//nowhere/weights.pt')\n"
        "r = create_encoder('xmodal-ref')\n"
        "print(e.dim, e.input_size, r.dim, r.input_size, 'open_clip' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["512", "(224,", "224)", "128", "(64,", "64)", "False"]
    import open_clip

    assert open_clip.get_model_config("ViT-B-32")["embed_dim"] == 512  # the same answer
