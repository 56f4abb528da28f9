"""LLaVA-family rerankers through transformers (LLaVA-1.5, LLaVA-OneVision, and the
project's own `xmodal-ref-vlm`, which is a small LLaVA).

Specs after the `llava:` prefix are those of search/encoders/hf_checkpoint.py, e.g.
llava:llava-hf/llava-onevision-qwen2-0.5b-ov-hf, llava:llava-hf/llava-1.5-7b-hf@REV or
llava:local-dir:/dir. The model loads on first use, on CUDA in float16 when present.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from xmodal.search.encoders._torch_utils import pick_device
from xmodal.search.encoders.hf_checkpoint import HfCheckpoint, HfSpec, transformers_module
from xmodal.search.encoders.registry import register_encoder
from xmodal.search.errors import ModelLoadError

from .base import CAPTION, METHODS, VQA, Reranker, WordSupport
from .prompts import (
    CAPTION_PROMPT,
    DESCRIBE_PROMPT,
    NO,
    YES,
    answer_logprobs,
    answer_text,
    chat_prompt,
    encode,
    vqa_prompt,
)

DEFAULT_RERANKER_HUB = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
# Heatmaps by occlusion: a square of OCCLUSION_WINDOW of the picture's side is hidden
# at each cell of an OCCLUSION_CELLS x OCCLUSION_CELLS grid (overlapping squares: the
# heat is finer than the square).
OCCLUSION_CELLS = 12
OCCLUSION_WINDOW = 0.2
OCCLUSION_BLUR = 0.15  # the hidden square shows the picture blurred by this share of its side
# A model saved by training/train_vlm_reference.py names its better-measured method here.
METHOD_CONFIG_KEY = "xmodal_rerank_method"


class LlavaSpec(HfSpec):
    """A parsed `llava:` spec."""

    FAMILY = "llava"
    EXAMPLE = DEFAULT_RERANKER_HUB


class LlavaReranker(Reranker):
    """A transformers image-text-to-text model of the LLaVA family, loaded lazily."""

    def __init__(self, rest: str = DEFAULT_RERANKER_HUB, device: str = "auto", batch: int = 16):
        super().__init__()
        self.parsed = LlavaSpec.parse(rest)
        self._spec = self.resolved_spec = f"llava:{rest.strip().removeprefix('llava:')}"
        self.checkpoint = HfCheckpoint(self.parsed, self.resolved_spec, "LLaVA")
        self._device_request = device
        self.batch = max(1, batch)  # pairs per forward pass, bounding memory
        self.device = "cpu"
        self._model: Any = None
        self._processor: Any = None
        self._run = threading.Lock()  # one forward pass at a time on the model
        self._default_method: str | None = None

    # -- cheap -----------------------------------------------------------
    @property
    def identity(self) -> str:
        return self.checkpoint.identity

    @property
    def default_method(self) -> str:  # type: ignore[override]
        if self._default_method is None:
            try:
                config = self.checkpoint.cheap_config() or {}
            except ModelLoadError:
                config = {}  # the load fails later with its own message
            method = config.get(METHOD_CONFIG_KEY)
            self._default_method = method if method in METHODS else VQA
        return self._default_method

    @property
    def input_size(self) -> tuple[int, int]:
        self.load()
        images = self._processor.image_processor
        size = getattr(images, "crop_size", None) or getattr(images, "size", None) or {}
        if "height" in size:
            return int(size["height"]), int(size["width"])
        side = int(size.get("shortest_edge", 336))
        return side, side

    # -- loading ---------------------------------------------------------
    def _load(self) -> None:
        import torch

        transformers = transformers_module("rerank", "LLaVA")
        device = pick_device(self._device_request)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self._processor = self.checkpoint.from_pretrained(transformers.AutoProcessor)
        model = self.checkpoint.from_pretrained(
            transformers.AutoModelForImageTextToText, dtype=dtype
        )
        model.to(device)
        model.eval()
        model.requires_grad_(False)  # heatmaps take gradients of activations only
        self.device = device
        self._model = model

    # -- scoring ---------------------------------------------------------
    def score(
        self, queries: Sequence[str], images: Sequence[Image.Image], method: str
    ) -> list[float]:
        if method not in METHODS:
            raise ValueError(f"rerank method must be one of {METHODS}, not {method!r}")
        if len(queries) != len(images):
            raise ValueError("one query per picture")
        self.load()
        scores: list[float] = []
        for start in range(0, len(images), self.batch):
            part = slice(start, start + self.batch)
            if method == CAPTION:
                scores += self._caption_scores(queries[part], images[part])
            else:
                scores += self._vqa_scores(queries[part], images[part])
        return scores

    def answer_tokens(self, query: str, method: str) -> int:
        if method != CAPTION:
            return 1
        self.load()
        prompt = chat_prompt(self._processor, CAPTION_PROMPT)
        tokens = self._processor.tokenizer(answer_text(prompt, query), add_special_tokens=False)
        return max(1, len(tokens["input_ids"]))

    def _caption_scores(self, queries: Sequence[str], images: Sequence[Image.Image]) -> list[float]:
        """exp(mean log p(query token | picture)): the geometric-mean probability of the
        query's tokens as the picture's caption, in (0, 1]."""
        prompt = chat_prompt(self._processor, CAPTION_PROMPT)
        logprobs, targets = self._answer_logprobs([prompt] * len(images), queries, images)
        counts = (targets[:, 1:] != -100).sum(-1).clamp(min=1)
        return [math.exp(v) for v in (logprobs.sum(-1) / counts).tolist()]

    def _vqa_scores(self, queries: Sequence[str], images: Sequence[Image.Image]) -> list[float]:
        """P(Yes) against P(No) at the answer's first token."""
        import torch

        prompts = [chat_prompt(self._processor, vqa_prompt(q)) for q in queries]
        encoded = self._encode(images, prompts, [YES] * len(images))
        keep = encoded.answer_span + 1
        with self._run, torch.inference_mode():
            logits = self._model(**self._to_device(encoded.inputs), logits_to_keep=keep).logits
        scores = []
        for row, prompt in enumerate(prompts):
            shared, yes, no = self._yes_no(prompt)
            # With left padding the answer's token j sits `span - j` from the end; the
            # logits one position earlier predict it. Yes and No are compared at their
            # first differing token (a tokenizer may give both a leading-space token).
            span = int((encoded.targets[row] != -100).sum())
            at = logits[row, keep - span + shared - 1].float()
            pair = torch.stack([at[yes], at[no]])
            scores.append(float(torch.softmax(pair, 0)[0]))
        return scores

    def _yes_no(self, prompt: str) -> tuple[int, int, int]:
        """The tokens Yes and No share at their start, and their first differing tokens."""
        tokenizer = self._processor.tokenizer
        yes = tokenizer(answer_text(prompt, YES), add_special_tokens=False)["input_ids"]
        no = tokenizer(answer_text(prompt, NO), add_special_tokens=False)["input_ids"]
        shared = 0
        while shared < min(len(yes), len(no)) - 1 and yes[shared] == no[shared]:
            shared += 1
        return shared, yes[shared], no[shared]

    def _encode(
        self, images: Sequence[Image.Image], prompts: Sequence[str], answers: Sequence[str]
    ) -> Any:
        return encode(self._processor, images, prompts, answers, pad_left=True)

    def _to_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        moved = {}
        for name, value in inputs.items():
            value = value.to(self.device)
            if value.is_floating_point():
                value = value.to(self._model.dtype)
            moved[name] = value
        return moved

    def _answer_logprobs(
        self, prompts: Sequence[str], answers: Sequence[str], images: Sequence[Image.Image]
    ) -> tuple[Any, Any]:
        """Per answer token, log p(token | picture, prompt); with the targets they align to."""
        import torch

        encoded = self._encode(images, prompts, answers)
        keep = encoded.answer_span + 1
        with self._run, torch.inference_mode():
            logits = self._model(**self._to_device(encoded.inputs), logits_to_keep=keep).logits
        targets = encoded.targets[:, -keep:]
        return answer_logprobs(logits.cpu(), targets).float(), targets

    # -- explanations ----------------------------------------------------
    def describe(self, images: Sequence[Image.Image], max_words: int = 40) -> list[str]:
        import torch

        self.load()
        prompt = chat_prompt(self._processor, DESCRIBE_PROMPT)
        descriptions = []
        for image in images:
            inputs = self._processor(images=[image], text=[prompt], return_tensors="pt")
            inputs = self._to_device(dict(inputs))
            with self._run, torch.inference_mode():
                out = self._model.generate(
                    **inputs,
                    max_new_tokens=max(4, int(max_words * 1.6)),
                    do_sample=False,
                    num_beams=1,
                )
            new = out[0, inputs["input_ids"].shape[1] :]
            text = self._processor.tokenizer.decode(new, skip_special_tokens=True)
            descriptions.append(" ".join(text.split()[:max_words]))
        return descriptions

    def word_support(self, query: str, image: Image.Image) -> list[WordSupport]:
        """Per word, log p(word | picture) - log p(word | a blank picture of the model's
        mean colour), summed over the word's tokens: the picture's own evidence."""
        self.load()
        prompt = chat_prompt(self._processor, CAPTION_PROMPT)
        blank = Image.new("RGB", image.size, self._mean_colour())
        logprobs, targets = self._answer_logprobs([prompt] * 2, [query] * 2, [image, blank])
        asked = targets[0, 1:] != -100
        delta = (logprobs[0] - logprobs[1])[asked].tolist()
        text = answer_text(prompt, query)
        offsets = self._processor.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True
        )["offset_mapping"]
        words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
        support = [0.0] * len(words)
        for (_, end), value in zip(offsets, delta, strict=False):
            for w, (start, stop, _) in enumerate(words):
                if start < end <= stop:
                    support[w] += value
                    break
        return [
            WordSupport(word, round(s, 4)) for (_, _, word), s in zip(words, support, strict=True)
        ]

    def fit_picture(self, image: Image.Image) -> Image.Image:
        """Shrink a decoded picture to what the processor would make of it anyway: the
        short side to the crop for centre-cropping processors (LLaVA-1.5, xmodal-ref-vlm),
        the long side to the base size otherwise (OneVision: one tile plus the base view,
        where a larger picture would be cut into more tiles). Never enlarges."""
        self.load()
        images = self._processor.image_processor
        height, width = self.input_size
        if getattr(images, "do_center_crop", False):
            scale = min(height, width) / min(image.size)
        else:
            scale = max(height, width) / max(image.size)
        if scale >= 1.0:
            return image
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, Image.Resampling.BICUBIC)

    def view(self, image: Image.Image) -> Image.Image:
        self.load()
        if not getattr(self._processor.image_processor, "do_center_crop", False):
            return image  # resized whole (LLaVA-OneVision's base view)
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        return image.crop((left, top, left + side, top + side))

    def heatmap(self, query: str, image: Image.Image, weighting: str = "occlusion") -> np.ndarray:
        """Grad-CAM on the projected patch tokens: per patch, the ReLU of
        sum(gradient x activation) of the query's score (the default method's log score)
        with respect to that patch's token as the language model receives it.
        `weighting="gradient"`: the gradient's norm alone (plain saliency), which
        training/eval_vlm_reference.py measures against Grad-CAM."""
        import torch

        self.load()
        if weighting == "occlusion":
            return self._occlusion(query, image)
        method = self.default_method
        if method == CAPTION:
            prompt, answer = chat_prompt(self._processor, CAPTION_PROMPT), query
        else:
            prompt, answer = chat_prompt(self._processor, vqa_prompt(query)), YES
        encoded = self._encode([image], [prompt], [answer])
        with self._run, self._capture_patches() as captured, torch.enable_grad():
            logits = self._model(**self._to_device(encoded.inputs)).logits
            logprobs = answer_logprobs(logits.float(), encoded.targets.to(logits.device))
            logprobs.sum().backward()
        patches = captured[0]
        assert patches.grad is not None
        grad = patches.grad[0].float()
        if weighting == "gradient":
            cam = grad.norm(dim=-1)
        elif weighting == "gradcam":
            cam = (grad * patches[0].detach().float()).sum(-1).clamp(min=0)
        else:
            raise ValueError(f"weighting must be occlusion, gradcam or gradient, not {weighting!r}")
        tokens = cam.shape[0]
        side = math.isqrt(tokens)
        if side * side != tokens and math.isqrt(tokens - 1) ** 2 == tokens - 1:
            cam, side = cam[1:], math.isqrt(tokens - 1)  # a leading class token
        grid = cam[: side * side].reshape(side, side).cpu().numpy().astype(np.float32)
        peak = float(grid.max())
        return grid / peak if peak > 0 else grid

    def _occlusion(
        self, query: str, image: Image.Image, cells: int = OCCLUSION_CELLS
    ) -> np.ndarray:
        """Occlusion sensitivity: the picture (as the model sees it) with a square of
        OCCLUSION_WINDOW of its side hidden, centred on each cell of a cells x cells grid
        in turn, all scored in batches; a cell's heat is the mean of how much hiding each
        square that covers the cell's centre lowers the query's log score (each square's
        drop spread over its area, as occlusion attribution does).

        A hidden square shows the picture heavily blurred, not a flat colour: a flat
        square is an object of its own to a model (on plain backgrounds it is "a grey
        square"), and hiding empty background with one lowered one-object captions more
        than hiding the object did (xmodal-ref-vlm's peak lies inside the named object on
        0.72 of 200 held-out single-object scenes with a flat fill, 0.94 blurred)."""
        view = self.view(image).convert("RGB")
        width, height = view.size
        blurred = view.filter(ImageFilter.GaussianBlur(OCCLUSION_BLUR * max(width, height)))
        half_w, half_h = OCCLUSION_WINDOW * width / 2, OCCLUSION_WINDOW * height / 2
        variants = [view]
        for row in range(cells):
            for col in range(cells):
                cx, cy = (col + 0.5) * width / cells, (row + 0.5) * height / cells
                hidden = view.copy()
                box = (
                    max(0, round(cx - half_w)),
                    max(0, round(cy - half_h)),
                    min(width, round(cx + half_w)),
                    min(height, round(cy + half_h)),
                )
                hidden.paste(blurred.crop(box), box)
                variants.append(hidden)
        scores = self.score([query] * len(variants), variants, self.default_method)
        logs = np.log(np.maximum(np.asarray(scores, np.float64), 1e-12))
        drops = np.maximum(logs[0] - logs[1:], 0.0).reshape(cells, cells)
        centres = (np.arange(cells) + 0.5) / cells
        # covers[i, j]: the square centred on cell i covers cell j's centre (per axis).
        covers = (abs(centres[:, None] - centres[None, :]) <= OCCLUSION_WINDOW / 2).astype(float)
        spread = covers.T @ drops @ covers / (covers.T @ np.ones_like(drops) @ covers)
        grid = spread.astype(np.float32)
        peak = float(grid.max())
        return grid / peak if peak > 0 else grid

    @contextmanager
    def _capture_patches(self) -> Iterator[list[Any]]:
        """The projector's output (picture tokens as the language model receives them),
        made a leaf that keeps its gradient."""
        inner = getattr(self._model, "model", self._model)
        projector = getattr(inner, "multi_modal_projector", None)
        if projector is None:
            raise ValueError(f"{self.spec} has no multi_modal_projector to explain with")
        captured: list[Any] = []

        def hook(_module: Any, _inputs: Any, output: Any) -> Any:
            leaf = output.detach().requires_grad_(True)
            leaf.retain_grad()
            captured.append(leaf)
            return leaf

        handle = projector.register_forward_hook(hook)
        try:
            yield captured
        finally:
            handle.remove()

    def _mean_colour(self) -> tuple[int, int, int]:
        mean = getattr(self._processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        r, g, b = (round(float(v) * 255) for v in mean[:3])
        return (r, g, b)


@register_encoder("llava", role="reranker")
def create_llava_reranker(rest: str, device: str = "auto", batch: int = 16) -> LlavaReranker:
    return LlavaReranker(rest, device=device, batch=batch)
