"""Bulk indexing on a Ray cluster: the local run's plan and writes, Ray Data's workers
for decoding and embedding.

The driver does what a local run does around the models: it holds the store's writer
lock for the whole run and plans with indexer/discover.plan_run (the same diff: new,
changed, removed, unchanged). Between the two, the files to index stream through a Ray
Dataset: decoded on CPU actors (indexer/ray_workers.DecodeWorker), then embedded on an
actor pool whose actors load the models once, one GPU each when the cluster has GPUs
(EmbedWorker). The embedding actors write the segment rows into the store's tables
themselves, as uncommitted Lance fragments, and hand back their metadata, not the
vectors; the driver commits them in the local run's order (indexer/fragments.
FragmentWriter: per commit the segments, then the item rows that mark them committed).
A run interrupted anywhere (the driver, a worker) leaves committed items and orphan
segments: the next run removes the orphans and embeds only what is missing.

Everything past the model calls is the local Indexer's own code (indexer/pipeline.py):
the Ray stage hands back each file's Decoded with vectors where its model inputs were,
so failures, duplicates, warnings, sound notes and the report come out as a local
run's.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xmodal.search.encoders import AUDIO_TEXT, IMAGE_TEXT
from xmodal.search.engine import Engine
from xmodal.search.errors import ModelLoadError, SourceError
from xmodal.search.media import kinds_in_space
from xmodal.search.store import FragmentTarget

from .audio_encode import EncodedAudio
from .background import BackgroundLoad
from .decode import Decoded
from .discover import Candidate
from .fragments import FragmentWriter
from .options import DecodeOptions, IndexOptions
from .pipeline import Indexer
from .progress import Progress
from .ray_workers import DecodeWorker, Embedded, EmbedWorker, ModelSpecs
from .report import IndexReport
from .writer import ItemWriter

if TYPE_CHECKING:
    from ray.data import Dataset


def import_ray() -> Any:
    """Ray (with Ray Data), or a clear error naming the extra that installs it."""
    try:
        import ray
        import ray.data  # Ray without its data extra lacks pyarrow and pandas
    except ImportError as error:
        raise SourceError(
            f"indexing on Ray needs Ray Data: pip install 'xmodal[ray]' ({error})"
        ) from error
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a Ray run goes."""

    # The cluster, unless this process already joined one: None or "local" starts one on
    # this machine; "auto" or "ray://head:10001" joins a running one.
    address: str | None = None
    actors: int = 1  # embedding actors (one model each; one GPU each on a GPU cluster)
    decode_actors: int = 0  # CPU actors decoding files; 0: the cluster's CPUs left over
    batch_size: int = 0  # files per embedding call; 0: the run's IndexOptions.batch_size
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else none


class RayIndexer(Indexer):
    """The local Indexer with its decode and encode stages on a Ray cluster (see the
    module's docstring); `run` and `index_catalog` work as the local ones."""

    # The actors' classes (tests put in ones that fail on purpose).
    decode_worker: type[DecodeWorker] = DecodeWorker
    embed_worker: type[EmbedWorker] = EmbedWorker

    def __init__(
        self,
        engine: Engine,
        options: IndexOptions | None = None,
        progress: Progress | None = None,
        decode: DecodeOptions | None = None,
        ray_options: RayOptions | None = None,
    ):
        super().__init__(engine, options, progress, decode)
        self.ray_options = ray_options or RayOptions()
        self._sounds: dict[int, EncodedAudio] = {}
        self._computed = 0  # model inputs the actors embedded

    def _image_load(self) -> BackgroundLoad:
        return _LoadedByWorkers(self.encoder)

    def _index_candidates(
        self,
        candidates: list[Candidate],
        metadata: Mapping[str, dict[str, Any]],
        report: IndexReport,
        image_load: BackgroundLoad,
        prepare: Callable[[], None],
        writer: ItemWriter | None = None,
    ) -> None:
        # The image model is loaded by the workers, never here: the driver only binds its
        # space (identity and dimension need no weights). The audio model is tried here as
        # in a local run, so that one that cannot load is said once and the run goes on
        # without sound; the actors load it again.
        ray = import_ray()
        self._computed, self._sounds = 0, {}  # per call: a catalog calls once per chunk
        sound = self._wants_sound(candidates)
        pictures = any(c.kind in kinds_in_space(IMAGE_TEXT) for c in candidates)
        loading = time.perf_counter()
        audio_encoder = self._load_audio(report) if sound else None
        report.times.load = time.perf_counter() - loading
        preparing = time.perf_counter()
        # The driver binds the space without the weights (identity and dimension need
        # none); one it created is removed again when the workers cannot load the model.
        new_space = pictures and self.store.space(IMAGE_TEXT) is None
        if pictures:
            self.engine.bind_space(IMAGE_TEXT)
        self._audio = None if audio_encoder is None else self._bind_audio(audio_encoder)
        report.times.discover += time.perf_counter() - preparing
        if not candidates:
            prepare()
            return
        if writer is not None:
            raise ValueError("a Ray run writes its own rows (its workers' fragments)")
        targets = {IMAGE_TEXT: self.store.fragment_target(IMAGE_TEXT)} if pictures else {}
        if self._audio is not None:
            targets[AUDIO_TEXT] = self.store.fragment_target(AUDIO_TEXT)
        fragments = FragmentWriter(
            self.store,
            self.options.write_batch_size,
            {space: target.dim for space, target in targets.items()},
        )
        started_cluster = _connect(ray, self.ray_options.address)
        try:
            dataset = self._dataset(ray, candidates, sound, pictures, targets)
            stream = self._embedded(dataset, candidates, report, fragments)
            # The store is changed (orphans, removed items) once the workers' models
            # loaded and the first files came back, so that a model that cannot load
            # fails the run before it changed anything, as a local run does.
            self._index(_after_first(stream, prepare), metadata, report, len(candidates), fragments)
        except ModelLoadError:
            # Raised at the first batch, before anything was written.
            if new_space:
                self.store.forget_empty_space(IMAGE_TEXT)
            raise
        finally:
            if started_cluster:
                ray.shutdown()
        report.encoded = self._computed
        order = {c.uri: number for number, c in enumerate(candidates)}
        report.failed.sort(key=lambda failure: order.get(failure[0], len(order)))
        report.warnings.sort(key=lambda warning: order.get(warning[0], len(order)))

    def _dataset(
        self,
        ray: Any,
        candidates: list[Candidate],
        sound: bool,
        pictures: bool,
        targets: dict[str, FragmentTarget],
    ) -> Dataset:
        options, mine = self.options, self.ray_options
        resources = ray.cluster_resources()
        gpus = mine.gpus_per_actor
        if gpus is None:
            gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        cpus = int(resources.get("CPU", 1))
        decode_actors = mine.decode_actors or max(1, cpus - (0 if gpus else mine.actors))
        decode_options = replace(
            self.decode,
            sound=sound and self._audio is not None,
            max_file_bytes=options.max_file_bytes,
            max_image_bytes=options.max_image_bytes,
            timeout=options.decode_timeout,
        )
        specs = ModelSpecs(
            image=self.encoder.spec if pictures else None,
            audio=None if self._audio is None else self._audio.encoder.spec,
            device="cuda" if gpus else "cpu",
            audio_options=None if self._audio is None else self._audio.options,
            batch_size=options.batch_size,
        )
        rows = [
            {"position": position, "candidate": pickle.dumps(c, protocol=pickle.HIGHEST_PROTOCOL)}
            for position, c in enumerate(candidates)
        ]
        # Several blocks per decode actor, so that decoding spreads over the actors from
        # the first files, and blocks of at most a few hundred files on large runs.
        blocks = max(1, min(len(rows), max(4 * decode_actors, len(rows) // 256)))
        dataset = ray.data.from_items(rows, override_num_blocks=blocks)
        decoded = dataset.map_batches(
            self.decode_worker,
            fn_constructor_args=(replace(specs, audio=None), decode_options),
            batch_size=4,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=decode_actors),
            num_cpus=1,
        )
        return decoded.map_batches(
            self.embed_worker,
            fn_constructor_args=(specs, targets),
            batch_size=mine.batch_size or options.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=mine.actors),
            num_gpus=gpus or None,
            num_cpus=0 if gpus else 1,
        )

    def _embedded(
        self,
        dataset: Dataset,
        candidates: list[Candidate],
        report: IndexReport,
        fragments: FragmentWriter,
    ) -> Iterator[Decoded]:
        """Each file as it comes back, after the fragments its batch's actor wrote were
        handed to the writer (to be committed before the files' item rows); its sound is
        kept for `_encode_audio`."""
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for written in batch["written"]:
                if written:  # one per actor batch; Ray may hand several over together
                    fragments.expect(pickle.loads(written))
            for position, row, failed in zip(
                batch["position"], batch["embedded"], batch["model_error"], strict=True
            ):
                if failed:  # before anything was written: the store is as it was
                    raise ModelLoadError(f"on the Ray workers: {failed}")
                embedded: Embedded = pickle.loads(row)
                # The caller's own Candidate, not the workers' copy: its `outcome` is
                # what a catalog run reads back.
                embedded.decoded.candidate = candidates[int(position)]
                self._computed += embedded.encoded
                report.times.encode += embedded.encode_seconds
                if embedded.sound is not None:
                    self._sounds[id(embedded.decoded)] = embedded.sound
                yield embedded.decoded

    # -- the local Indexer's model calls, answered by what the workers computed --
    def _encode_in_batches(self, prepared: list[np.ndarray]) -> np.ndarray:
        if not prepared:
            return np.zeros((0, self.encoder.dim), np.float32)
        return np.stack(prepared)  # vectors already: the embedding actors replaced the inputs

    def _encode_audio(self, sounds: list[Decoded]) -> dict[int, EncodedAudio]:
        return {id(d): self._sounds.pop(id(d)) for d in sounds}


class _LoadedByWorkers(BackgroundLoad):
    """The image model of a Ray run: the workers load it, the driver never does."""

    def start(self) -> None:
        pass


def _after_first(items: Iterable[Decoded], first: Callable[[], None]) -> Iterator[Decoded]:
    """The items, `first` called before the first one is handed on (or at the end, when
    there is none)."""
    called = False
    for item in items:
        if not called:
            first()
            called = True
        yield item
    if not called:
        first()


class RayJobs:
    """The Ray indexer of a long-lived process's catalog jobs (a server's): it joins the
    cluster at the first job, not at start-up, and stays joined until closed, so that
    each chunk finds the cluster there."""

    def __init__(
        self,
        engine: Engine,
        options: IndexOptions,
        decode: DecodeOptions,
        ray_options: RayOptions,
    ):
        self.ray_options = ray_options
        self._indexer = RayIndexer(engine, options, None, decode, ray_options)
        self._started = False  # this process started Ray: it shuts it down

    def indexer(self) -> RayIndexer:
        self._started = _connect(import_ray(), self.ray_options.address) or self._started
        return self._indexer

    def close(self) -> None:
        if self._started:
            import_ray().shutdown()
            self._started = False


@contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Within: this process is joined to the Ray cluster at `address` ("local" or None:
    a new one on this machine; "auto": the one this machine belongs to; "ray://HEAD:
    10001": a remote one). Runs inside reuse it instead of each joining its own."""
    ray = import_ray()
    started = _connect(ray, address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at `address` (None or "local": start one on this machine); True
    when this call started Ray."""
    if ray.is_initialized():
        return False
    address = None if address == "local" else address
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return True


def index_on_ray(
    engine: Engine,
    paths: Iterable[str | Path],
    options: IndexOptions | None = None,
    metadata: Mapping[str, dict[str, Any]] | None = None,
    progress: Progress | None = None,
    decode: DecodeOptions | None = None,
    ray_options: RayOptions | None = None,
) -> IndexReport:
    """Index files and folders into the engine's store as index_paths does, decoding
    and embedding on a Ray cluster (`ray_options.address`; None: a local one). The
    files must be readable at the same paths on every node (a shared filesystem)."""
    return RayIndexer(engine, options, progress, decode, ray_options).run(paths, metadata)
