"""CLAP audio-text encoders through transformers' ClapModel and ClapProcessor.

Specs (after the `clap:` prefix, which may also be left on):
  ORG/NAME[@REVISION]   a Hugging Face Hub model, e.g. laion/clap-htsat-unfused; the
                        first run downloads it into the Hugging Face cache
  local-dir:/dir        a folder as written by save_pretrained (config.json, weights,
                        processor files)
  /dir, ./dir, ~/dir    an existing folder works without the local-dir: prefix too
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.search.errors import ModelLoadError, ModelSpecError

from ._torch_utils import (
    autocast,
    looks_like_download_failure,
    normalise,
    offline_hint,
    pick_device,
)
from .base import AudioTextEncoder
from .digest import file_digest
from .registry import register_encoder

DEFAULT_CLAP_MODEL = "laion/clap-htsat-unfused"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
_HUB_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class ClapSpec:
    """A parsed `clap:` spec: exactly one of hub_id, local_dir is set."""

    hub_id: str | None = None
    revision: str | None = None
    local_dir: Path | None = None

    @classmethod
    def parse(cls, rest: str) -> ClapSpec:
        rest = rest.strip().removeprefix("clap:")
        if not rest:
            raise ModelSpecError(f"empty CLAP spec; write clap:{DEFAULT_CLAP_MODEL}")
        if rest.startswith("local-dir:"):
            folder = rest.removeprefix("local-dir:")
            if not folder:
                raise ModelSpecError("'clap:local-dir:' needs a folder: clap:local-dir:/path")
            return cls(local_dir=Path(folder).expanduser())
        path = Path(rest).expanduser()
        if rest.startswith(("/", "~", ".")) or path.is_dir():
            return cls(local_dir=path)
        name, _, revision = rest.partition("@")
        org, sep, model = name.partition("/")
        valid = (
            sep
            and org
            and model
            and "/" not in model
            and set(org) <= _HUB_NAME_CHARS
            and set(model) <= _HUB_NAME_CHARS
            and (revision or "@" not in rest)
        )
        if not valid:
            raise ModelSpecError(
                f"'clap:{rest}' is neither a Hugging Face model id (ORG/NAME[@REVISION], "
                f"e.g. clap:{DEFAULT_CLAP_MODEL}) nor an existing folder "
                "(clap:local-dir:/path/to/model)"
            )
        return cls(hub_id=name, revision=revision or None)

    @property
    def source(self) -> str:
        """The first argument of from_pretrained."""
        if self.local_dir is not None:
            return str(self.local_dir)
        assert self.hub_id
        return self.hub_id


def weights_digest(folder: Path) -> str:
    """sha256 over the weight files of a save_pretrained folder, by name and content."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise ModelLoadError(
            f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {folder}; a CLAP folder is "
            "what ClapModel.save_pretrained writes"
        )
    digest = hashlib.sha256()
    for p in files:
        # The name goes in too so that two shards swapping content is a different model;
        # each file's own digest is cached (search/encoders/digest.py).
        digest.update(p.name.encode() + b"\0" + file_digest(p).encode())
    return digest.hexdigest()


def _offline_hint(spec: str) -> str:
    return offline_hint(
        f"The CLAP model {spec} is not in the local Hugging Face cache",
        [
            "a model folder written by save_pretrained (--model clap:local-dir:/path/to/model)",
            "a Hugging Face cache that already holds it (set HF_HOME to it)",
        ],
        reachable="is the network reachable, or is HF_HUB_OFFLINE set",
        note="A first run downloads it once.",
    )


class ClapEncoder(AudioTextEncoder):
    """A transformers CLAP model, loaded lazily on first use."""

    def __init__(self, rest: str = DEFAULT_CLAP_MODEL, device: str = "auto"):
        super().__init__()
        self.parsed = ClapSpec.parse(rest)
        self._spec = self.resolved_spec = f"clap:{rest.strip().removeprefix('clap:')}"
        self._device_request = device
        self._identity: str | None = None
        self._dim: int | None = None
        self._model: Any = None
        self._processor: Any = None
        self._lowercase = False
        self.device = "cpu"

    # -- identity, cheap -------------------------------------------------
    @property
    def identity(self) -> str:
        if self._identity is None:
            p = self.parsed
            if p.local_dir is not None:
                self._check_local_dir()
                # By content, so that a moved or copied folder is still the same model.
                self._identity = f"clap:sha256:{weights_digest(p.local_dir)[:16]}"
            else:
                self._identity = f"hf:{p.hub_id}@{p.revision or 'main'}"
        return self._identity

    @property
    def dim(self) -> int:
        if self._dim is None:
            config = self._cheap_config()
            if config is not None and "projection_dim" in config:
                self._dim = int(config["projection_dim"])
            else:
                self.load()
                self._dim = int(self._model.config.projection_dim)
        return self._dim

    @property
    def sample_rate(self) -> int:
        return int(self._load_processor().feature_extractor.sampling_rate)

    @property
    def window_seconds(self) -> float:
        extractor = self._load_processor().feature_extractor
        return float(extractor.nb_max_samples) / float(extractor.sampling_rate)

    def _check_local_dir(self) -> None:
        folder = self.parsed.local_dir
        assert folder is not None
        if not folder.is_dir():
            raise ModelLoadError(f"CLAP model folder not found: {folder}")
        if not (folder / "config.json").is_file():
            raise ModelLoadError(
                f"{folder} has no config.json; a CLAP folder is what "
                "ClapModel.save_pretrained and ClapProcessor.save_pretrained write"
            )

    def _cheap_config(self) -> dict[str, Any] | None:
        """config.json from the folder or the hub cache, without touching the network."""
        p = self.parsed
        if p.local_dir is not None:
            self._check_local_dir()
            path: Path | None = p.local_dir / "config.json"
        else:
            from huggingface_hub import try_to_load_from_cache

            assert p.hub_id
            found = try_to_load_from_cache(p.hub_id, "config.json", revision=p.revision)
            path = Path(found) if isinstance(found, str) else None
        if path is None:
            return None
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return config if isinstance(config, dict) else None

    # -- loading ---------------------------------------------------------
    def _from_pretrained(self, cls: Any) -> Any:
        p = self.parsed
        if p.local_dir is not None:
            self._check_local_dir()
        try:
            return cls.from_pretrained(p.source, revision=p.revision)
        except (ModelSpecError, ModelLoadError):
            raise
        except Exception as error:  # OSError, ValueError, huggingface_hub errors
            message = str(error)
            # transformers words a missing download as "can't load ... make sure ... is
            # the correct path", so the cache is asked as well as the message read.
            if p.hub_id is not None and (
                looks_like_download_failure(f"{type(error).__name__} {message}")
                or self._cheap_config() is None
            ):
                raise ModelLoadError(
                    f"{_offline_hint(self.spec)} Cause: {message[:300]}"
                ) from error
            raise ModelLoadError(f"could not load {self.resolved_spec}: {message[:500]}") from error

    def _load_processor(self) -> Any:
        if self._processor is None:
            # The base's reentrant load lock: `_load` calls this while holding it.
            with self._load_lock:
                if self._processor is None:
                    ClapProcessor = _transformers().ClapProcessor
                    self._processor = self._from_pretrained(ClapProcessor)
        return self._processor

    def _load(self) -> None:
        self._load_processor()
        model = self._from_pretrained(_transformers().ClapModel)
        device = pick_device(self._device_request)
        model.to(device)
        model.eval()
        self.device = device
        self._dim = int(model.config.projection_dim)
        # A model trained on lower-case captions says so in its config (xmodal-ref-audio);
        # hub CLAP models are cased and keep the text as written.
        self._lowercase = bool(getattr(model.config, "xmodal_lowercase_text", False))
        self._model = model

    # -- audio -----------------------------------------------------------
    def encode_audio(
        self, batch: Sequence[np.ndarray], sample_rate: int | None = None
    ) -> np.ndarray:
        import torch

        self.load()
        extractor = self._processor.feature_extractor
        if sample_rate is not None and int(sample_rate) != int(extractor.sampling_rate):
            raise ValueError(
                f"{self.spec} expects audio at {extractor.sampling_rate} Hz, not {sample_rate} Hz; "
                "resample the clips first"
            )
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        max_samples = int(extractor.nb_max_samples)
        clips = []
        for clip in batch:
            clip = np.asarray(clip, dtype=np.float32)
            if clip.ndim != 1:
                raise ValueError(f"audio clips must be mono 1-D arrays, not shape {clip.shape}")
            if clip.size == 0:
                # The extractor's repeat-padding divides by the clip length.
                clip = np.zeros(max_samples, dtype=np.float32)
            # The extractor crops longer clips at a random offset; cutting here keeps
            # the same clip giving the same vector.
            clips.append(clip[:max_samples])
        fusion = bool(getattr(self._model.config.audio_config, "enable_fusion", False))
        features = extractor(
            clips,
            sampling_rate=extractor.sampling_rate,
            # Fused models take 4 mel channels, unfused ones one; the checkpoint decides.
            truncation="fusion" if fusion else "rand_trunc",
            return_tensors="pt",
        )
        # With fusion and no clip longer than the window, the extractor flags a random
        # clip as longer; no clip is, and a random flag would make vectors depend on
        # their batch.
        is_longer = torch.zeros((len(clips), 1), dtype=torch.bool)
        with torch.inference_mode():
            inputs = features["input_features"].to(self.device, dtype=torch.float32)
            with self._autocast():
                output = self._model.get_audio_features(
                    input_features=inputs, is_longer=is_longer.to(self.device)
                )
            return normalise(_features(output))

    # -- texts -----------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        self.load()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokenizer = self._processor.tokenizer
        # RoBERTa's position table has two slots reserved for padding offsets.
        max_length = int(self._model.config.text_config.max_position_embeddings) - 2
        max_length = min(max_length, int(tokenizer.model_max_length))
        tokens = tokenizer(
            [text.lower() for text in texts] if self._lowercase else list(texts),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            tokens = {name: value.to(self.device) for name, value in tokens.items()}
            with self._autocast():
                output = self._model.get_text_features(**tokens)
            return normalise(_features(output))

    def _autocast(self) -> Any:
        return autocast(self.device, prefer_bf16=False)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ModelLoadError(
            "CLAP models need transformers: pip install 'xmodal[audio]'"
        ) from error
    # Its per-load progress bars would interleave with xmodal's own output.
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _features(output: Any) -> Any:
    """The projected (n, dim) tensor of get_audio_features / get_text_features."""
    import torch

    # transformers 5 returns a model output whose pooler_output holds the projected
    # (already normalised) features; 4.x returned the projected tensor itself.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@register_encoder("clap")
def create_clap_encoder(rest: str, device: str = "auto") -> ClapEncoder:
    return ClapEncoder(rest, device=device)
