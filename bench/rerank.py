"""Reranking a search's top hits: the latency a search pays, batched versus one pass per candidate.

    .venv/bin/python bench/rerank.py                        # xmodal-ref-vlm, top 10/20/50; OneVision-0.5B arch, top 10
    .venv/bin/python bench/rerank.py --no-onevision --repeats 100
    .venv/bin/python bench/rerank.py --model llava:/abs/model-folder --device cuda
    .venv/bin/python bench/rerank.py --ov-tops 10,20 --ov-repeats 3
    .venv/bin/python bench/rerank.py --model tiny-llava     # a tiny random LLaVA: the code path only
    .venv/bin/python bench/rerank.py --smoke                # tiny random models, seconds

Pictures are --side x --side JPEGs (384 by default) of generated shapes
(xmodal/synthetic/shapes.py), written once under bench-data/ (git-ignored); the
queries are generated captions, each used by one search only, so that no score comes
from the service's score cache. On CPU, torch runs --threads intra-op threads (2).

1. For --model (xmodal-ref-vlm, the reference reranker in search/models/; any llava:
   spec, or tiny-llava) and each top N in --tops, a search's reranking as the engine
   runs it: RerankService.rerank(query, N candidates) with the pictures already in the
   service's picture cache (decoded by apply.picture_of, as a running server holds its
   popular items), --repeats times, each time with a fresh query: p50/p99 latency and
   pairs/s. Method: the model's default first, then the others of --methods.
2. The in-run baseline, alternating with (1) so that a drift of the machine hits both:
   the same N pictures and query scored one forward pass per candidate
   (`reranker.score([query], [picture], method)` for each in turn); prints
   per-candidate/batched, and the largest difference between the two modes' scores.
3. "Cold pictures" for top --headline-top (20): the same, except that every candidate
   is a picture the service has not seen (a fresh cache key), so each is decoded from
   its JPEG file (apply.picture_of) inside the measured search.
4. Where the time goes, per search: the processor (of which pictures: the image
   processor; the rest is prompts and tokens), the vision tower, the rest of the
   forward pass (projector, language model) and everything else (chat prompts,
   scores, the service and its batcher thread); from timing wrappers and forward hooks
   on the loaded model.
5. Unless --no-onevision, a model of LLaVA-OneVision-0.5B's architecture with seeded
   random weights (its speed is the real model's, its scores are not), built from
   configs with the sizes published in the config.json of
   llava-hf/llava-onevision-qwen2-0.5b-ov-hf: a Qwen2 language model (hidden 896,
   intermediate 4864, 24 layers, 14 heads, 2 key-value heads, vocabulary 152,000,
   tied embeddings), a SigLIP so400m vision tower (image 384, patch 14, hidden 1152,
   intermediate 4304, 26 layers, 16 heads, no head), vision_feature_layer -1,
   vision_feature_select_strategy "full", a gelu projector, and image_grid_pinpoints
   every (height, width) of multiples of 384 up to 2304; with a small BPE tokenizer
   (training/vlm_parts.py) and the ChatML chat template. Written once under bench-data/
   (float16, 1.7 GB; in float32 on CPU the process peaks near 6.5 GB at top 10). It takes
   tens of seconds per candidate on 2 CPU cores: top --ov-tops (10) with --ov-repeats (2) repeats, the
   per-candidate baseline on --ov-baseline (2) candidates only (its per-search figure is
   that cost times N, marked ~). Also prints how many input tokens one pair is for
   a 384x384 picture and for a 768x576 one (what picture_of keeps of a 4:3 photo).

Prints one summary line per headline figure, "top 20 with MODEL (METHOD, ...): p50 X ms
(target <= 150 ms): MEETS" (or ABOVE; the exit status is 0 either way).

Other processes' CPU use is measured for every search (/proc/stat) and shown as
"other"; above 5% a warning says the figures are disturbed.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import CpuMeter, parse_args  # noqa: E402  (bench/ is the script folder)

BENCH_DATA = REPO / "bench-data"
PICTURES_VERSION = 1  # bump when the generated pictures change, so cached folders are rebuilt
ONEVISION_VERSION = 1  # likewise for the OneVision-architecture model
TINY_LLAVA = "tiny-llava"  # --model: training/vlm_parts.tiny_llava, built in a temporary folder
BUDGET_MS = 3_600_000.0  # the service's budget here: no search falls back mid-measurement

# The sizes in llava-hf/llava-onevision-qwen2-0.5b-ov-hf's published config.json.
OV_TEXT = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 152_000,
    "max_position_embeddings": 32_768,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
    "tie_word_embeddings": True,
}
OV_VISION = {
    "image_size": 384,
    "patch_size": 14,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 26,
    "num_attention_heads": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "vision_use_head": False,
}
OV_SIDE = 384
OV_PINPOINTS = [
    [h, w] for h in range(OV_SIDE, 2305, OV_SIDE) for w in range(OV_SIDE, 2305, OV_SIDE)
]


# -- pictures and queries ------------------------------------------------------
def picture_folder(count: int, side: int, seed: int = 0) -> Path:
    """bench-data/rerank-shapes-... with `count` JPEGs of generated shapes, written once."""
    from xmodal.synthetic.shapes import jpeg_bytes, random_scene, render

    folder = BENCH_DATA / f"rerank-shapes-v{PICTURES_VERSION}-n{count}-{side}px-s{seed}"
    if folder.is_dir():
        return folder
    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    partial_dir = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=BENCH_DATA))
    rng = np.random.default_rng(seed)
    for i in range(count):
        picture = render(random_scene(rng), rng, side=side)
        (partial_dir / f"shapes_{i:03d}.jpg").write_bytes(jpeg_bytes(picture, rng))
    partial_dir.rename(folder)
    return folder


class Queries:
    """Generated captions, each handed out once (a fresh query: no score-cache hit)."""

    def __init__(self, seed: int = 1):
        self._rng = np.random.default_rng(seed)
        self._used: set[str] = set()

    def next(self) -> str:
        from xmodal.synthetic.shapes import caption, random_scene

        for _ in range(100):
            text = caption(random_scene(self._rng), self._rng)
            if text not in self._used:
                break
        else:  # the generator ran dry: make one unique
            text = f"{text} ({len(self._used)})"
        self._used.add(text)
        return text


# -- where the time goes -------------------------------------------------------
STAGES = ("processor", "pictures", "vision", "forward", "decode")


class Stages:
    """Seconds spent in each stage of a loaded LlavaReranker's scoring, from a wrapper
    around its `_encode` (the processor and the answers' tokens), one around the image
    processor's `preprocess`, and forward hooks on the model and its vision tower.
    `forward` is the whole forward pass (vision included); `decode` is the pictures'
    decoding when a search has to read them (cold)."""

    def __init__(self, reranker: Any, device: str):
        self.totals: dict[str, float] = defaultdict(float)
        self.passes = 0
        self._cuda = device.startswith("cuda")
        self._local = threading.local()
        reranker._encode = self._timed(reranker._encode, "processor")
        images = reranker._processor.image_processor
        images.preprocess = self._timed(images.preprocess, "pictures")
        model = reranker._model
        self._hook(model, "forward", count=True)
        tower = getattr(getattr(model, "model", model), "vision_tower", None)
        if tower is not None:
            self._hook(tower, "vision")

    def take(self) -> dict[str, float]:
        """The totals since the last take, and how many forward passes ran."""
        found = dict(self.totals)
        found["passes"] = self.passes
        self.totals = defaultdict(float)
        self.passes = 0
        return found

    def add(self, stage: str, seconds: float) -> None:
        self.totals[stage] += seconds

    def _sync(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize()

    def _timed(self, function: Callable[..., Any], stage: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.totals[stage] += time.perf_counter() - started

        return timed

    def _hook(self, module: Any, stage: str, count: bool = False) -> None:
        def before(*_: Any) -> None:
            self._sync()
            setattr(self._local, stage, time.perf_counter())

        def after(*_: Any) -> None:
            self._sync()
            self.totals[stage] += time.perf_counter() - getattr(self._local, stage)
            if count:
                self.passes += 1

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


# -- measuring -----------------------------------------------------------------
@dataclass
class Row:
    method: str
    top: int
    cold: bool = False
    batched: list[float] = field(default_factory=list)  # seconds per search
    baseline: list[float] = field(default_factory=list)  # seconds per search (or per candidate)
    baseline_candidates: int = 0  # candidates scored one by one per repetition
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    baseline_stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    foreign_share: list[float] = field(default_factory=list)
    max_diff: float = 0.0

    @property
    def extrapolated(self) -> bool:
        return 0 < self.baseline_candidates < self.top

    def baseline_search(self) -> list[float]:
        """Seconds per search one pass per candidate, scaled to N when fewer were scored."""
        scale = self.top / self.baseline_candidates if self.baseline_candidates else 0.0
        return [seconds * scale for seconds in self.baseline]

    @staticmethod
    def ms(values: list[float], percentile: float) -> float:
        return float(np.percentile(values, percentile)) * 1000

    @staticmethod
    def pairs_per_s(values: list[float], pairs: int) -> float:
        return pairs * len(values) / sum(values)


@dataclass
class ModelRun:
    label: str
    resolved_spec: str
    device: str
    default_method: str
    batch: int  # pairs per forward pass
    load_s: float
    rows: list[Row] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)  # picture -> input tokens of a pair


def candidates_for(folder: Path, tag: object) -> list[Any]:
    """A Candidate per JPEG, decoded as the engine decodes a hit's picture."""
    from xmodal.search.media import ImageLimits, MediaKind
    from xmodal.search.rerank.apply import picture_of
    from xmodal.search.rerank.service import Candidate
    from xmodal.search.store.records import ItemRecord

    limits = ImageLimits()
    found = []
    for path in sorted(folder.glob("*.jpg")):
        item = ItemRecord(id=path.stem, uri=str(path), kind=MediaKind.IMAGE, root=str(folder))
        # The files are the bench's own: located as they are (a store checks its roots).
        located = partial(picture_of, item, None, limits, locate=lambda record: Path(record.uri))
        found.append(Candidate((tag, item.id), located))
    return found


def timed_candidates(candidates: list[Any], stages: Stages) -> list[Any]:
    """The same candidates, their decoding timed as the `decode` stage."""
    from xmodal.search.rerank.service import Candidate

    def decode(load: Callable[[int], Any], side: int) -> Any:
        started = time.perf_counter()
        try:
            return load(side)
        finally:
            stages.add("decode", time.perf_counter() - started)

    return [Candidate(c.key, partial(decode, c.picture)) for c in candidates]


def open_model(spec: str, label: str, args: argparse.Namespace) -> tuple[Any, ModelRun]:
    """The service and its loaded reranker, or SystemExit with a reason."""
    from xmodal.search.errors import ModelLoadError
    from xmodal.search.rerank.service import RerankService
    from xmodal.search.rerank.settings import RerankSettings

    settings = RerankSettings(model=spec, max_top_n=1000, timeout_ms=BUDGET_MS)
    service = RerankService(settings, device=args.device)
    reranker = service.reranker()
    started = time.perf_counter()
    try:
        reranker.load()
        reranker.identity  # noqa: B018  (the folder's digest, once)
    except ModelLoadError as error:
        hint = ""
        if spec == "xmodal-ref-vlm":
            hint = (
                "\nxmodal-ref-vlm is not in search/models/ yet; pass another reranker, e.g. "
                "--model llava:/abs/path/to/folder (or --model tiny-llava to try the bench)"
            )
        raise SystemExit(f"cannot load {spec}: {error}{hint}") from error
    load_s = time.perf_counter() - started
    if args.batch:
        reranker.batch = args.batch
    run = ModelRun(
        label,
        reranker.resolved_spec,
        reranker.device,
        reranker.default_method,
        reranker.batch,
        load_s,
    )
    return service, run


def rerank_once(service: Any, query: str, candidates: list[Any], method: str) -> dict[int, float]:
    from xmodal.search.rerank.service import RerankRequest

    request = RerankRequest(
        top_n=len(candidates), model=service.settings.model, method=method, timeout_ms=BUDGET_MS
    )
    outcome = service.rerank(query, candidates, request)
    report = outcome.report
    if not report.applied or report.cached or report.scored != len(candidates):
        raise SystemExit(f"the service did not rerank as measured: {report}")
    return outcome.scores


def measure(
    service: Any,
    run: ModelRun,
    pictures: Path,
    queries: Queries,
    *,
    tops: list[int],
    methods: list[str],
    repeats: int,
    baseline_candidates: int | None,
    cold_top: int | None,
    warm_up: list[int],
    args: argparse.Namespace,
) -> None:
    reranker = service.reranker()
    stages = Stages(reranker, args.device)
    warm = candidates_for(pictures, "warm")
    for candidate in warm:
        service.picture(candidate, reranker)  # decoded once, kept in the picture cache
    ordered = [reranker.default_method] + [m for m in methods if m != reranker.default_method]
    for method in ordered:
        for size in warm_up:  # first passes allocate and tune; not measured
            rerank_once(service, queries.next(), warm[:size], method)
            reranker.score([queries.next()], [service.picture(warm[0], reranker)], method)
        for top in tops:
            row = Row(method, top, baseline_candidates=min(top, baseline_candidates or top))
            stages.take()
            for repetition in range(repeats):
                query = queries.next()
                meter = CpuMeter()
                batched: dict[int, float] = {}
                one_by_one: list[float] = []
                modes = ["batched", "baseline"]
                for mode in modes if repetition % 2 == 0 else modes[::-1]:
                    started = time.perf_counter()
                    if mode == "batched":
                        batched = rerank_once(service, query, warm[:top], method)
                        row.batched.append(time.perf_counter() - started)
                        for stage, seconds in stages.take().items():
                            row.stages[stage] += seconds
                    else:
                        images = [
                            service.picture(c, reranker) for c in warm[: row.baseline_candidates]
                        ]
                        started = time.perf_counter()
                        one_by_one = [reranker.score([query], [im], method)[0] for im in images]
                        row.baseline.append(time.perf_counter() - started)
                        for stage, seconds in stages.take().items():
                            row.baseline_stages[stage] += seconds
                row.foreign_share.append(meter.stop()["foreign_share"])
                gaps = [abs(batched[i] - score) for i, score in enumerate(one_by_one)]
                row.max_diff = max([row.max_diff, *gaps])
            run.rows.append(row)
            print(f"  {run.label}: {method} top {top} done", flush=True)
        if cold_top and method == reranker.default_method:
            row = Row(method, cold_top, cold=True)
            stages.take()
            for repetition in range(repeats):
                cold = timed_candidates(candidates_for(pictures, ("cold", repetition)), stages)
                meter = CpuMeter()
                started = time.perf_counter()
                rerank_once(service, queries.next(), cold[:cold_top], method)
                row.batched.append(time.perf_counter() - started)
                row.foreign_share.append(meter.stop()["foreign_share"])
                for stage, seconds in stages.take().items():
                    row.stages[stage] += seconds
            run.rows.append(row)
            print(f"  {run.label}: {method} top {cold_top} cold pictures done", flush=True)


# -- the models ----------------------------------------------------------------
@contextmanager
def model_spec(name: str) -> Iterator[tuple[str, str]]:
    """(spec, label) for --model; tiny-llava is built in a temporary folder."""
    if name != TINY_LLAVA:
        yield name, name
        return
    from training.vlm_parts import tiny_llava

    with tempfile.TemporaryDirectory(prefix="xmodal-bench-tiny-llava-") as folder:
        yield f"llava:{tiny_llava(Path(folder))}", TINY_LLAVA


@contextmanager
def onevision_spec(arch: str) -> Iterator[tuple[str, str]]:
    if arch == "tiny":
        from training.vlm_parts import tiny_onevision

        with tempfile.TemporaryDirectory(prefix="xmodal-bench-tiny-onevision-") as folder:
            yield f"llava:{tiny_onevision(Path(folder))}", "tiny OneVision layout"
        return
    yield f"llava:{onevision_05b_architecture()}", "OneVision-0.5B architecture (random weights)"


def onevision_05b_architecture(seed: int = 0) -> Path:
    """bench-data/rerank-onevision-0.5b-arch-...: LLaVA-OneVision-0.5B's architecture with
    seeded random weights, saved as save_pretrained saves a download; written once."""
    folder = BENCH_DATA / f"rerank-onevision-0.5b-arch-v{ONEVISION_VERSION}-s{seed}"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    from training.vlm_parts import CHATML_TEMPLATE, IMAGE, VIDEO, build_tokenizer, save_llava
    from xmodal.search.rerank.prompts import CAPTION_PROMPT, DESCRIBE_PROMPT, vqa_prompt

    print(f"building {folder.name} (once; a minute or two) ...", flush=True)
    started = time.perf_counter()
    queries = Queries(seed=99)
    corpus = [queries.next() for _ in range(300)]
    corpus += [CAPTION_PROMPT, DESCRIBE_PROMPT, vqa_prompt(corpus[0]), "Yes", "No"]
    tokenizer = build_tokenizer(corpus, vocab_size=1024, extra=["<|im_start|>", "<|im_end|>"])
    assert len(tokenizer) <= OV_TEXT["vocab_size"]
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**OV_VISION),
        text_config=Qwen2Config(
            **OV_TEXT,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        projector_hidden_act="gelu",
        image_grid_pinpoints=OV_PINPOINTS,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval().to(torch.float16)
    size = {"height": OV_SIDE, "width": OV_SIDE}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size=size, image_grid_pinpoints=OV_PINPOINTS, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer,
        num_image_tokens=(OV_SIDE // OV_VISION["patch_size"]) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=CHATML_TEMPLATE,
    )
    partial_dir = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=BENCH_DATA))
    save_llava(partial_dir, model, processor)
    del model
    gc.collect()
    partial_dir.rename(folder)
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def pair_tokens(reranker: Any) -> dict[str, int]:
    """Input tokens of one VQA pair for a square picture of the model's side and for a
    768x576 one (a 4:3 photo as apply.picture_of keeps it: short side >= 384, long side
    <= 768)."""
    from PIL import Image

    from xmodal.search.rerank.prompts import chat_prompt, vqa_prompt

    side = reranker.input_size[0]
    prompt = chat_prompt(reranker._processor, vqa_prompt("a red square on the left"))
    found = {}
    for width, height in [(side, side), (768, 576)]:
        picture = Image.new("RGB", (width, height), (128, 128, 128))
        inputs = reranker._processor(images=[picture], text=[prompt], return_tensors="pt")
        found[f"{width}x{height}"] = int(inputs["input_ids"].shape[1])
    return found


# -- printing ------------------------------------------------------------------
def print_run(run: ModelRun, args: argparse.Namespace) -> float:
    """Prints a model's tables; returns the worst other-process CPU share seen."""
    import torch

    print()
    print("=" * 100)
    print(
        f"{run.label} ({run.resolved_spec}): on {run.device}"
        f"{f', {torch.get_num_threads()} threads' if run.device == 'cpu' else ''}; "
        f"loaded in {run.load_s:.1f} s; default method {run.default_method}; "
        f"{run.batch} pairs per forward pass"
    )
    if run.tokens:
        shown = ", ".join(f"{picture}: {n}" for picture, n in run.tokens.items())
        print(f"  input tokens of one pair (picture + question) by picture size: {shown}")
    print(
        f"  {'method':<8}{'top':>4}{'pictures':>9}{'p50 ms':>10}{'p99 ms':>10}{'pairs/s':>9}"
        f"{'passes':>7} |{'1-by-1 p50':>11}{'pairs/s':>9}{'1-by-1/batched':>15}"
        f"{'max|diff|':>10}{'other':>6}"
    )
    worst = 0.0
    for row in run.rows:
        worst = max([worst, *row.foreign_share])
        reps = len(row.batched)
        passes = row.stages.get("passes", 0) / reps
        line = (
            f"  {row.method:<8}{row.top:>4}{'cold' if row.cold else 'cached':>9}"
            f"{row.ms(row.batched, 50):10.1f}{row.ms(row.batched, 99):10.1f}"
            f"{row.pairs_per_s(row.batched, row.top):9.3g}{passes:7.1f} |"
        )
        if row.baseline:
            one = row.baseline_search()
            mark = "~" if row.extrapolated else " "
            line += (
                f"{mark}{row.ms(one, 50):10.1f}{row.pairs_per_s(one, row.top):9.3g}"
                f"{row.ms(one, 50) / row.ms(row.batched, 50):14.2f}x{row.max_diff:10.1e}"
            )
        else:
            line += f"{'-':>11}{'-':>9}{'-':>15}{'-':>10}"
        print(f"{line}{max(row.foreign_share):6.0%}")
    if any(row.extrapolated for row in run.rows):
        print(
            "  ~ one pass per candidate timed on the first "
            f"{max(row.baseline_candidates for row in run.rows)} candidates only, times N"
        )
    print("  where the time goes, mean ms per search:")
    print(
        f"    {'method':<8}{'top':>4}  {'mode':<14}{'total':>9}{'decode':>9}{'processor':>10}"
        f"{'(pictures)':>11}{'vision':>9}{'rest of fwd':>12}{'other':>9}"
    )
    for row in run.rows:
        modes = [("cold" if row.cold else "batched", row.stages, row.batched)]
        if row.baseline:
            modes.append(("1-by-1", row.baseline_stages, row.baseline))
        for mode, stages, totals in modes:
            reps = len(totals)
            scale = row.top / row.baseline_candidates if mode == "1-by-1" else 1.0
            mean = {k: stages.get(k, 0.0) / reps * 1000 * scale for k in STAGES}
            total = sum(totals) / reps * 1000 * scale
            other = total - mean["decode"] - mean["processor"] - mean["forward"]
            print(
                f"    {row.method:<8}{row.top:>4}  {mode:<14}{total:9.1f}{mean['decode']:9.1f}"
                f"{mean['processor']:10.1f}{mean['pictures']:11.1f}{mean['vision']:9.1f}"
                f"{mean['forward'] - mean['vision']:12.1f}{other:9.1f}"
            )
    return worst


def headline(run: ModelRun, top: int, target_ms: float) -> None:
    for row in run.rows:
        if row.top != top or row.method != run.default_method:
            continue
        p50 = row.ms(row.batched, 50)
        pictures = "pictures decoded from JPEG" if row.cold else "pictures cached"
        verdict = "MEETS" if p50 <= target_ms else "ABOVE"
        print(
            f"top {top} with {run.label} ({row.method}, {pictures}): p50 {p50:.1f} ms, "
            f"p99 {row.ms(row.batched, 99):.1f} ms (target <= {target_ms:g} ms): {verdict}"
        )


def duration(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 10_000 else f"{ms:.1f} ms"


def comma_list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [kind(part) for part in text.split(",") if part.strip()]

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default="xmodal-ref-vlm",
        help=f"reranker spec (default xmodal-ref-vlm); {TINY_LLAVA}: a tiny random LLaVA",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto, ...")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU (2)")
    parser.add_argument("--tops", type=comma_list(int), default=[10, 20, 50], help="10,20,50")
    parser.add_argument("--repeats", type=int, default=30, help="searches per figure (30)")
    parser.add_argument(
        "--methods",
        type=comma_list(str),
        default=["caption", "vqa"],
        help="caption,vqa (default both; the model's default first)",
    )
    parser.add_argument(
        "--headline-top",
        type=int,
        default=20,
        help="top N of the summary line and of the cold-pictures figure (20)",
    )
    parser.add_argument("--target-ms", type=float, default=150.0, help="p50 a search may add (150)")
    parser.add_argument("--side", type=int, default=384, help="pictures' side in pixels (384)")
    parser.add_argument("--batch", type=int, help="pairs per forward pass (the reranker's own)")
    parser.add_argument("--no-onevision", action="store_true", help="skip the OneVision model")
    parser.add_argument(
        "--ov-arch",
        choices=["0.5b", "tiny"],
        default="0.5b",
        help="0.5b: LLaVA-OneVision-0.5B's sizes (default); tiny: vlm_parts.tiny_onevision",
    )
    parser.add_argument("--ov-tops", type=comma_list(int), default=[10], help="10")
    parser.add_argument("--ov-repeats", type=int, default=2, help="searches per figure (2)")
    parser.add_argument(
        "--ov-baseline", type=int, default=2, help="candidates scored one by one (2)"
    )
    args = parse_args(
        parser,
        argv,
        model=TINY_LLAVA,
        tops=[3, 5],
        repeats=3,
        headline_top=5,
        ov_arch="tiny",
        ov_tops=[3],
        ov_repeats=1,
    )
    from xmodal.search.rerank import METHODS

    if not args.methods or set(args.methods) - set(METHODS):
        parser.error(f"--methods: some of {', '.join(METHODS)}")
    if not args.tops or min(args.tops) < 1 or min(args.ov_tops, default=1) < 1:
        parser.error("--tops and --ov-tops: positive numbers")

    import torch

    torch.set_num_threads(args.threads)
    count = max([*args.tops, args.headline_top, *args.ov_tops])
    pictures = picture_folder(count, args.side)
    queries = Queries()
    runs = []
    with model_spec(args.model) as (spec, label):
        service, run = open_model(spec, label, args)
        measure(
            service,
            run,
            pictures,
            queries,
            tops=args.tops,
            methods=args.methods,
            repeats=args.repeats,
            baseline_candidates=None,
            cold_top=args.headline_top,
            warm_up=sorted(set(args.tops)),
            args=args,
        )
        runs.append(run)
    del service
    if not args.no_onevision:
        with onevision_spec(args.ov_arch) as (spec, label):
            ov_pictures = picture_folder(count, OV_SIDE) if args.side != OV_SIDE else pictures
            service, run = open_model(spec, label, args)
            run.tokens = pair_tokens(service.reranker())
            measure(
                service,
                run,
                ov_pictures,
                queries,
                tops=args.ov_tops,
                methods=[],  # the model's default only
                repeats=args.ov_repeats,
                baseline_candidates=args.ov_baseline,
                cold_top=None,
                warm_up=[1],
                args=args,
            )
            runs.append(run)

    worst = max(print_run(run, args) for run in runs)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak memory (max RSS): {peak_gb:.1f} GB; {os.cpu_count()} cpus")
    headline(runs[0], args.headline_top, args.target_ms)
    for run in runs[1:]:
        for row in run.rows:
            p50 = row.ms(row.batched, 50)
            print(
                f"{run.label}, top {row.top} ({row.method}): p50 {duration(p50)} added per "
                f"search ({duration(p50 / row.top)} per candidate), "
                f"{row.pairs_per_s(row.batched, row.top):.3g} pairs/s"
            )
    if worst > 0.05:
        print(
            f"WARNING: other processes used up to {worst:.0%} of the machine's CPU during a "
            "search; the figures are disturbed (see 'other'). Re-run on an idle machine."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
