"""open_clip image-text encoders.

Specs (after the `open_clip:` prefix):
  ARCH/TAG            a pretrained tag, e.g. ViT-B-32/laion2b_s34b_b79k
  ARCH//abs/path.pt   a local checkpoint for ARCH (clip-retrieval's convention);
  ARCH/rel/path.pt    a relative checkpoint path works as well
  hf-hub:ORG/NAME     config and weights from a Hugging Face Hub repository
  local-dir:/dir      a folder with open_clip_config.json and weights
A spec that names no weights is refused: xmodal never embeds with random weights.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xmodal.search.errors import ModelLoadError, ModelSpecError

from ._torch_utils import (
    autocast,
    looks_like_download_failure,
    normalise,
    offline_hint,
    pick_device,
)
from .base import DEFAULT_LOGIT_SCALE, ImageTextEncoder
from .digest import file_digest
from .preprocess import PIL_RESAMPLE, resize_center_crop
from .registry import register_encoder

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")
_configs_registered = False
_configs_lock = threading.Lock()


def register_builtin_configs() -> None:
    """Make the architectures in search/model_configs known to open_clip (once)."""
    global _configs_registered
    with _configs_lock:
        if _configs_registered:
            return
        import open_clip

        open_clip.add_model_config(Path(str(resources.files("xmodal.search") / "model_configs")))
        _configs_registered = True


def architecture_config(arch: str) -> dict[str, Any] | None:
    """open_clip's config of an architecture (embed_dim, vision_cfg, ...), or None.

    Read from the JSON file open_clip itself reads (xmodal's model_configs, then
    open_clip's), without importing open_clip: that import alone takes seconds, and
    checking a store's space (its dimension) or a re-run with nothing to embed needs
    no model. Once open_clip is imported, it answers (configs may have been added)."""
    if "open_clip" in sys.modules:
        register_builtin_configs()
        import open_clip

        config = open_clip.get_model_config(arch)
        return dict(config) if config else None
    folders = [Path(str(resources.files("xmodal.search") / "model_configs"))]
    found = importlib.util.find_spec("open_clip")  # locates the package, runs nothing
    if found is not None and found.submodule_search_locations:
        folders.append(Path(next(iter(found.submodule_search_locations))) / "model_configs")
    for folder in folders:
        path = folder / f"{arch}.json"
        if path.is_file():
            config = json.loads(path.read_text(encoding="utf-8"))
            return config if isinstance(config, dict) else None
    return None


@dataclass(frozen=True)
class OpenClipSpec:
    """A parsed `open_clip:` spec: exactly one of tag, checkpoint, hub_id, local_dir is set."""

    arch: str | None = None
    tag: str | None = None
    checkpoint: Path | None = None
    hub_id: str | None = None
    local_dir: Path | None = None

    @classmethod
    def parse(cls, rest: str) -> OpenClipSpec:
        if rest.startswith("hf-hub:"):
            hub_id = rest.removeprefix("hf-hub:")
            if hub_id.count("/") != 1:
                raise ModelSpecError(f"'open_clip:{rest}': write open_clip:hf-hub:ORG/NAME")
            return cls(hub_id=hub_id)
        if rest.startswith("local-dir:"):
            return cls(local_dir=Path(rest.removeprefix("local-dir:")).expanduser())
        arch, sep, weights = rest.partition("/")
        if not sep or not weights:
            raise ModelSpecError(
                f"'open_clip:{rest}' names an architecture but no weights; xmodal never uses "
                f"random weights. Write open_clip:{arch}/TAG (a pretrained tag) or "
                f"open_clip:{arch}//path/to/checkpoint.pt"
            )
        looks_like_path = (
            "/" in weights
            or weights.endswith(CHECKPOINT_SUFFIXES)
            or weights.startswith(("~", "."))
        )
        if looks_like_path:
            return cls(arch=arch, checkpoint=Path(weights).expanduser())
        return cls(arch=arch, tag=weights)

    @property
    def model_name(self) -> str:
        """The first argument of open_clip.create_model."""
        if self.hub_id:
            return f"hf-hub:{self.hub_id}"
        if self.local_dir:
            return f"local-dir:{self.local_dir}"
        assert self.arch
        return self.arch


def _offline_hint(spec: str, arch: str | None) -> str:
    return offline_hint(
        f"The weights for {spec} are not in the local model cache",
        [
            f"a local checkpoint (--model open_clip:{arch or 'ARCH'}//path/to/checkpoint.pt)",
            "a model already in the Hugging Face cache (set HF_HOME to it)",
            "a built-in offline model (see `xmodal models`)",
        ],
        reachable="is the network reachable",
    )


class OpenClipEncoder(ImageTextEncoder):
    """An open_clip model, loaded lazily on first use."""

    def __init__(self, rest: str, device: str = "auto"):
        super().__init__()
        self._spec = self.resolved_spec = f"open_clip:{rest}"
        self.parsed = OpenClipSpec.parse(rest)
        self._device_request = device
        self._identity: str | None = None
        self._config: dict[str, Any] | None = None  # the architecture's, read on first need
        self._model: Any = None
        self._tokenizer: Any = None
        self._preprocess: Any = None
        self._preprocess_cfg: dict[str, Any] = {}
        self._embed_dim = 0
        self.device = "cpu"

    # -- identity, cheap -------------------------------------------------
    @property
    def identity(self) -> str:
        if self._identity is None:
            p = self.parsed
            if p.checkpoint is not None:
                if not p.checkpoint.is_file():
                    raise ModelLoadError(f"checkpoint file not found: {p.checkpoint}")
                # By content, so that a moved checkpoint is still the same model.
                self._identity = f"open_clip:{p.arch}/sha256:{file_digest(p.checkpoint)[:16]}"
            else:
                self._identity = self.resolved_spec
        return self._identity

    @property
    def dim(self) -> int:
        """Embedding dimension: from the architecture's config when known, else by loading."""
        config = self._arch_config()
        if config:
            return int(config["embed_dim"])
        self.load()
        return self._embed_dim

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) in pixels: from the architecture's config when known, else by loading.

        Answering without the model lets the indexer decode images while it loads. open_clip
        sets the loaded model's preprocess size from the same vision_cfg (224 when unset).
        """
        config = self._arch_config()
        if config:
            return _pair(config.get("vision_cfg", {}).get("image_size", 224))
        self.load()
        return _pair(self._preprocess_cfg.get("size", 224))

    def _arch_config(self) -> dict[str, Any] | None:
        """open_clip's config for the spec's architecture while the model is not loaded.

        None once it is (the loaded model answers then), and for hub and folder specs,
        whose config comes with their weights.
        """
        if self._model is None and self.parsed.arch:
            # Read once: decode workers ask for input_size per image while the model loads.
            if self._config is None:
                self._config = architecture_config(self.parsed.arch) or {}
            return self._config or None
        return None

    # -- loading ---------------------------------------------------------
    def _load(self) -> None:
        register_builtin_configs()
        import open_clip
        import torch

        p = self.parsed
        if p.arch and open_clip.get_model_config(p.arch) is None:
            raise ModelSpecError(
                f"unknown open_clip architecture {p.arch!r} in {self.resolved_spec}; "
                "`python -c 'import open_clip; print(open_clip.list_models())'` lists them"
            )
        if p.checkpoint is not None and not p.checkpoint.is_file():
            raise ModelLoadError(f"checkpoint file not found: {p.checkpoint}")
        if (
            p.tag is not None
            and p.arch
            and p.tag not in open_clip.list_pretrained_tags_by_model(p.arch)
        ):
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(p.arch)) or "none"
            raise ModelSpecError(
                f"{p.arch!r} has no pretrained tag {p.tag!r}; known tags: {tags}. "
                f"For a checkpoint file write open_clip:{p.arch}//path/to/checkpoint.pt"
            )
        device = pick_device(self._device_request)
        pretrained = p.tag or (str(p.checkpoint) if p.checkpoint else None)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                p.model_name,
                pretrained=pretrained,
                device=device,
                require_pretrained=True,
            )
        except (ModelSpecError, ModelLoadError):
            raise
        except Exception as error:  # open_clip raises RuntimeError/FileNotFoundError/OSError
            message = str(error)
            downloading = p.tag is not None or p.hub_id is not None
            if downloading and looks_like_download_failure(message):
                raise ModelLoadError(
                    f"{_offline_hint(self.spec, p.arch)} Cause: {message[:300]}"
                ) from error
            raise ModelLoadError(f"could not load {self.resolved_spec}: {message[:500]}") from error
        model.eval()
        self._tokenizer = open_clip.get_tokenizer(p.model_name)
        self._preprocess = preprocess
        self._preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
        with torch.inference_mode():
            probe = self._tokenizer(["probe"]).to(device)
            self._embed_dim = int(model.encode_text(probe).shape[-1])
        self.device = device
        self._model = model

    @property
    def logit_scale(self) -> float:
        self.load()
        scale = getattr(self._model, "logit_scale", None)
        return DEFAULT_LOGIT_SCALE if scale is None else float(scale.detach().exp())

    # -- images ----------------------------------------------------------
    def load_preprocessing(self) -> None:
        """An open_clip architecture's preprocessing as open_clip sets it on the model
        it builds (its defaults, the pretrained tag's settings over them, the vision
        config's image size), without building the model; hub and folder specs, whose
        settings come with their weights, load."""
        if self._preprocess is not None:
            return
        config = self._arch_config()
        if config is None:
            self.load()
            return
        register_builtin_configs()
        import open_clip
        from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

        cfg = asdict(PreprocessCfg())
        if self.parsed.tag:
            cfg = merge_preprocess_dict(
                cfg, open_clip.get_pretrained_cfg(self.parsed.arch, self.parsed.tag)
            )
        cfg["size"] = _pair(config.get("vision_cfg", {}).get("image_size", cfg["size"]))
        transform = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
        self._preprocess_cfg = cfg
        self._preprocess = transform  # last: its presence says the two are ready

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        """Replicates open_clip's PIL preprocessing geometry, stopping before normalisation.

        Returns uint8 HxWxC for the 'shortest' and 'squash' resize modes (normalised
        later, batched, on the device) and open_clip's own float CHW tensor otherwise.
        """
        if self._preprocess is None:
            self.load()
        cfg = self._preprocess_cfg
        height, width = self.input_size
        mode = cfg.get("resize_mode", "shortest")
        resample = PIL_RESAMPLE.get(cfg.get("interpolation", "bicubic"), Image.Resampling.BICUBIC)
        if mode == "squash":
            return np.asarray(image.resize((width, height), resample))
        if mode != "shortest" or height != width:
            return self._preprocess(image).numpy()
        return resize_center_crop(image, height, resample)

    def encode_prepared(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        self.load()
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        stacked = np.stack(batch)
        with torch.inference_mode():
            tensor = torch.from_numpy(stacked).to(self.device, non_blocking=True)
            if stacked.dtype == np.uint8:
                mean = torch.tensor(self._preprocess_cfg["mean"], device=self.device) * 255.0
                std = torch.tensor(self._preprocess_cfg["std"], device=self.device) * 255.0
                tensor = ((tensor.float() - mean) / std).permute(0, 3, 1, 2).contiguous()
            with self._autocast():
                features = self._model.encode_image(tensor)
            return normalise(features)

    # -- texts -----------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        self.load()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            tokens = self._tokenizer(list(texts)).to(self.device)
            with self._autocast():
                features = self._model.encode_text(tokens)
            return normalise(features)

    def _autocast(self) -> Any:
        return autocast(self.device, prefer_bf16=True)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """An open_clip image size (one side, or height and width) as (height, width) pixels."""
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


@register_encoder("open_clip", role="image-text encoder")
def create_open_clip_encoder(rest: str, device: str = "auto") -> OpenClipEncoder:
    return OpenClipEncoder(rest, device=device)
