"""CLAP audio-text encoders through transformers' ClapModel and ClapProcessor.

Specs after the `clap:` prefix are those of search/encoders/hf_checkpoint.py, e.g.
clap:laion/clap-htsat-unfused, clap:ORG/NAME@REVISION or clap:local-dir:/dir.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._torch_utils import autocast, normalise, pick_device
from .base import DEFAULT_LOGIT_SCALE, AudioTextEncoder
from .hf_checkpoint import HfCheckpoint, HfSpec, transformers_module
from .registry import register_encoder

DEFAULT_CLAP_MODEL = "laion/clap-htsat-unfused"


class ClapSpec(HfSpec):
    """A parsed `clap:` spec."""

    FAMILY = "clap"
    EXAMPLE = DEFAULT_CLAP_MODEL


class ClapEncoder(AudioTextEncoder):
    """A transformers CLAP model, loaded lazily on first use."""

    def __init__(self, rest: str = DEFAULT_CLAP_MODEL, device: str = "auto"):
        super().__init__()
        self.parsed = ClapSpec.parse(rest)
        self._spec = self.resolved_spec = f"clap:{rest.strip().removeprefix('clap:')}"
        self.checkpoint = HfCheckpoint(self.parsed, self.resolved_spec, "CLAP")
        self._device_request = device
        self._dim: int | None = None
        self._model: Any = None
        self._processor: Any = None
        self._lowercase = False
        self.device = "cpu"

    # -- identity, cheap -------------------------------------------------
    @property
    def identity(self) -> str:
        return self.checkpoint.identity

    @property
    def dim(self) -> int:
        if self._dim is None:
            config = self.checkpoint.cheap_config()
            if config is not None and "projection_dim" in config:
                self._dim = int(config["projection_dim"])
            else:
                self.load()
                self._dim = int(self._model.config.projection_dim)
        return self._dim

    @property
    def logit_scale(self) -> float:
        self.load()
        scale = getattr(self._model, "logit_scale_t", None)  # text-to-audio's temperature
        return DEFAULT_LOGIT_SCALE if scale is None else float(scale.detach().exp())

    @property
    def sample_rate(self) -> int:
        return int(self._load_processor().feature_extractor.sampling_rate)

    @property
    def window_seconds(self) -> float:
        extractor = self._load_processor().feature_extractor
        return float(extractor.nb_max_samples) / float(extractor.sampling_rate)

    # -- loading ---------------------------------------------------------
    def _load_processor(self) -> Any:
        if self._processor is None:
            # The base's reentrant load lock: `_load` calls this while holding it.
            with self._load_lock:
                if self._processor is None:
                    ClapProcessor = _transformers().ClapProcessor
                    self._processor = self.checkpoint.from_pretrained(ClapProcessor)
        return self._processor

    def _load(self) -> None:
        self._load_processor()
        model = self.checkpoint.from_pretrained(_transformers().ClapModel)
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
    return transformers_module("audio", "CLAP")


def _features(output: Any) -> Any:
    """The projected (n, dim) tensor of get_audio_features / get_text_features."""
    import torch

    # transformers 5 returns a model output whose pooler_output holds the projected
    # (already normalised) features; 4.x returned the projected tensor itself.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@register_encoder("clap", role="audio-text encoder")
def create_clap_encoder(rest: str, device: str = "auto") -> ClapEncoder:
    return ClapEncoder(rest, device=device)
