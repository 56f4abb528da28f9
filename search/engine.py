"""The query engine: a store plus one encoder per embedding space.

engine = Engine.open("~/xmodal-data")
result = engine.search_text("a red bicycle", k=5)

Images and video keyframes live in the image-text space, audio windows (of audio
files and of videos' soundtracks) in the audio-text space. A text query is asked in
every space and the hits are merged by calibrated score (search/space/calibration.py);
queries by example stay in the space of the example.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from xmodal.search.encoders import (
    AUDIO_TEXT,
    DEFAULT_AUDIO_MODEL,
    DEFAULT_MODEL,
    IMAGE_TEXT,
    NO_AUDIO_MODEL,
    AudioTextEncoder,
    Encoder,
    ImageTextEncoder,
    create_audio_encoder,
    create_encoder,
)
from xmodal.search.errors import InvalidQueryError, ModelLoadError, UnknownItemError
from xmodal.search.facets import Facets, facets_of
from xmodal.search.filters import validate_filter
from xmodal.search.hits import Hit, SearchResult, SegmentHit
from xmodal.search.media import (
    AudioOptions,
    ImageLimits,
    MediaKind,
    decode_image,
    iter_audio_windows,
)
from xmodal.search.rerank.apply import candidate, explain_hits, rerank_hits
from xmodal.search.rerank.explain import Explanation, explain_picture, heatmap_png
from xmodal.search.rerank.service import RerankRequest, RerankService
from xmodal.search.rerank.settings import RerankSettings
from xmodal.search.settings import AnnSettings, QuerySettings
from xmodal.search.space import (
    Calibration,
    IndexState,
    RankedItem,
    RefreshReport,
    RowFilter,
    Space,
    SpaceIndex,
    SpaceView,
    best_moments,
    segment_hits,
)
from xmodal.search.store import INDEXED, ItemRecord, SpaceRecord, Store, catalog_item_id

log = logging.getLogger(__name__)

# How often queries look whether a migration switched a space to another model (a stat).
MODEL_CHECK_SECONDS = 1.0


class EngineSettings(Protocol):
    """What `Engine.from_settings` reads (xmodal.api.settings.Settings has it)."""

    @property
    def data(self) -> Path: ...
    @property
    def model(self) -> str | None: ...
    @property
    def audio_model(self) -> str | None: ...
    @property
    def device(self) -> str: ...
    @property
    def query(self) -> QuerySettings: ...
    @property
    def ann(self) -> AnnSettings: ...
    @property
    def images(self) -> ImageLimits: ...
    @property
    def rerank(self) -> RerankSettings: ...


class Engine:
    """Answers queries over one store. Encoders are injected (tests pass tiny models);
    without an audio encoder the audio space is neither indexed nor searched.

    What other layers use is public here: the store it reads (`store`), its encoders
    (`encoder`, `audio_encoder`), binding a space to its model before writing to it
    (`bind_space`), bringing the vector indexes up to date (`refresh_indexes`,
    `index_reports`), and the queries."""

    def __init__(
        self,
        store: Store,
        encoder: ImageTextEncoder,
        audio_encoder: AudioTextEncoder | None = None,
        query: QuerySettings | None = None,
        ann: AnnSettings | None = None,
        limits: ImageLimits | None = None,
        rerank: RerankSettings | None = None,
        device: str = "auto",
        *,
        audio_requested: bool = True,
    ):
        self._store = store
        # Whether the audio model was asked for (by name, or handed over as an encoder),
        # rather than the default or the store's: one that cannot load then stops an
        # indexing run instead of leaving sound out.
        self.audio_model_requested = audio_requested
        self.query = query or QuerySettings()
        self.limits = limits or ImageLimits()
        self.device = device  # where models that the store switches to are loaded
        self._ann = ann
        # Reranking and explanations: models load on first use, once per process.
        self.reranking = RerankService(rerank, device)
        q = self.query
        self._image: Space[ImageTextEncoder] = Space(
            store, IMAGE_TEXT, encoder, ann, q.text_cache_size, q.text_batch_wait_ms
        )
        self._audio: Space[AudioTextEncoder] | None = None
        if audio_encoder is not None:
            self._audio = Space(
                store, AUDIO_TEXT, audio_encoder, ann, q.text_cache_size, q.text_batch_wait_ms
            )
        self._live = False  # serve_live
        self._facets: tuple[tuple[int, int], Facets] | None = None
        self._facets_lock = threading.Lock()
        # Following a migration's switch (_follow_models).
        self._next_model_check = time.monotonic() + MODEL_CHECK_SECONDS
        self._adopting: dict[str, threading.Thread] = {}
        self._adopt_lock = threading.Lock()
        self._unloadable: dict[str, str] = {}  # space -> model identity that failed to load
        # Refuse a different model before any work is done with it.
        for space in self._spaces():
            if store.space(space.name) is not None:
                space.ensure_space()

    @classmethod
    def open(
        cls,
        data: str | Path,
        model: str | None = None,
        device: str = "auto",
        audio_model: str | None = None,
        query: QuerySettings | None = None,
        ann: AnnSettings | None = None,
        limits: ImageLimits | None = None,
        rerank: RerankSettings | None = None,
    ) -> Engine:
        """Open (or create) a store; models default to the ones the store was built with."""
        store = Store(data)
        encoder = create_encoder(model_for_store(store, model), device=device)
        audio_spec = audio_model_for_store(store, audio_model)
        audio_encoder = None
        if audio_spec is not None:
            audio_encoder = create_audio_encoder(audio_spec, device=device)
            try:
                audio_encoder.identity  # noqa: B018  (a local model folder must exist)
            except ModelLoadError as error:
                if audio_model:  # asked for by name: an error
                    raise
                # The store's audio model went missing: pictures stay searchable.
                log.warning("sound is not searchable: %s", error)
                audio_encoder = None
        return cls(
            store,
            encoder,
            audio_encoder,
            query,
            ann,
            limits,
            rerank,
            device,
            audio_requested=bool(audio_model),
        )

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> Engine:
        """The engine the application's settings describe (data, models, groups)."""
        return cls.open(
            settings.data,
            model=settings.model,
            device=settings.device,
            audio_model=settings.audio_model,
            query=settings.query,
            ann=settings.ann,
            limits=settings.images,
            rerank=settings.rerank,
        )

    # -- what the indexer, the CLI and the server use ---------------------
    @property
    def store(self) -> Store:
        """The store this engine reads; the indexer writes to it."""
        return self._store

    @property
    def encoder(self) -> ImageTextEncoder:
        """The image-text encoder."""
        return self._image.encoder

    @property
    def audio_encoder(self) -> AudioTextEncoder | None:
        """The audio-text encoder; None when sound is neither indexed nor searched."""
        return None if self._audio is None else self._audio.encoder

    def encoder_for(self, space: str) -> Encoder:
        """The encoder of a space ("image-text", "audio-text")."""
        return self._space(space).encoder

    def _logit_scale(self, space: str) -> float:
        """A space's model temperature: its cosines as log odds (reranking fuses on it)."""
        return self.encoder_for(space).logit_scale

    def bind_space(self, space: str = IMAGE_TEXT) -> SpaceRecord:
        """Create the space for its encoder in the store, or check that the store's was
        built with the same model (ModelMismatchError otherwise). Call before writing."""
        return self._space(space).ensure_space()

    def refresh_indexes(
        self, save: bool = False, rebuild: bool = False, needed_only: bool = False
    ) -> dict[str, RefreshReport]:
        """Bring the vector index of every space the store holds to its current version.

        `save` writes it where servers load it from; `rebuild` starts from nothing;
        `needed_only` skips spaces small enough to be searched exactly."""
        reports = {}
        for space in self._spaces():
            if self._store.space(space.name) is None:
                continue
            if needed_only and space.index.wanted_kind() == "exact":
                continue
            reports[space.name] = space.index.refresh(save=save, rebuild=rebuild)
        return reports

    def serve_live(self) -> None:
        """Answer queries from the newest store version already applied while a newer
        one is applied in a background thread (a server: no query waits for an indexer's
        commit to be read). Writes made through this engine's own callers are followed
        by `catch_up`, so they are searchable when the write returns."""
        self._live = True
        for space in self._spaces():
            space.serve_live()

    def catch_up(self) -> None:
        """Wait until every space serves the store's current version."""
        for space in self._spaces():
            if self._store.space(space.name) is not None:
                space.index.view(wait=True)

    def save_staged_index(self, staged: str) -> RefreshReport:
        """Build and save the index of a space a migration is building (`image-text@next`)
        with this engine's ANN settings, before the switch: a server then takes the new
        model up by loading that index rather than building it. The caller holds the
        migration lock, which covers the staged space's index; indexing and catalog
        writes go on meanwhile (the writer lock is not taken)."""
        return SpaceIndex(self._store, staged, self._ann).refresh(save=True, locked=False)

    def index_reports(self) -> dict[str, RefreshReport | None]:
        """Per space, how its vector index was last brought up to date: the kind it
        searches with now ("exact", "hnsw", ...), whether it was built or loaded, and
        what changed; None for a space that has not served a query yet."""
        return {space.name: space.index.last_refresh for space in self._spaces()}

    def index_states(self) -> dict[str, IndexState]:
        """Per space the store holds, what queries are served from now: vectors and items
        in memory, the store version they reflect and the store's current one, when they
        were last brought up to date. Reads no vectors and builds nothing (for metrics)."""
        held = {record.name for record in self._store.spaces()}
        return {space.name: space.index.state() for space in self._spaces() if space.name in held}

    def calibration(self, space: str = IMAGE_TEXT) -> Calibration:
        """How text-query similarities in a space map to calibrated scores now (for the
        store's current version; search/space/calibration.py)."""
        found = self._space(space)
        view = found.view()
        if view is None:
            raise InvalidQueryError(f"the {space} space holds nothing yet")
        return found.calibration(view)

    def audio_window_options(self, max_seconds: float, hop_seconds: float = 0.0) -> AudioOptions:
        """Windows cut to what the audio model takes (its rate and clip length)."""
        encoder = self.audio_encoder
        if encoder is None:
            raise InvalidQueryError("no audio model is configured for this store")
        return audio_window_options(encoder, max_seconds, hop_seconds)

    def item(self, item_id: str) -> ItemRecord:
        """An item by either id: the caller's own (external_id) or xmodal's."""
        return self._store.find_item(item_id)

    def warm(self) -> None:
        """Load the models and the spaces' vectors, indexes and calibrations now, not on
        the first query."""
        present = [space for space in self._spaces() if space.view() is not None]
        # A new store warms the image model, so that a bad one fails before serving;
        # a sound-only store never needs it.
        for space in present or [self._image]:
            space.warm()
        if self.reranking.settings.preload:
            self.reranking.preload()

    def facets(self) -> Facets:
        """The indexed items' metadata keys, with their types, counts and (when few)
        values: what a search page builds its filters from. Computed once per store
        version (a pass over the items' metadata)."""
        view = next((v for v in (s.view() for s in self._spaces()) if v is not None), None)
        if view is None:
            return Facets(items=0, kinds={})
        with self._facets_lock:
            cached = self._facets
            if cached is not None and cached[0] == view.version:
                return cached[1]
            # Every snapshot holds every indexed item: one space's is enough.
            found = facets_of(view.snapshot.live_items)
            self._facets = (view.version, found)
            return found

    # -- spaces ------------------------------------------------------------
    def _spaces(self) -> list[Space[Any]]:
        self._follow_models()
        return [s for s in (self._image, self._audio) if s is not None]

    # -- following the store's models (a migration's switch) -----------------------
    def follow_store(self) -> None:
        """Take up now, waiting for it to load, the model a migration switched a space to
        (when it is not already). Writers call it under the writer lock before they
        embed (indexer/pipeline.py), so that they embed with the space's model."""
        for name, record in self._switched_spaces():
            thread = self._adopt_in_background(name, record, retry=True)
            if thread is not None:
                thread.join()

    def _follow_models(self) -> None:
        """At most once a second (a stat of the spaces table), look whether a migration
        switched a space to another model; if so, a Space with that model is built off
        the request path, in a thread, and swapped in once loaded and ready to answer.
        Until then the current one answers, from its own table (Store.pinned)."""
        now = time.monotonic()
        if now < self._next_model_check:
            return
        self._next_model_check = now + MODEL_CHECK_SECONDS
        switched = self._switched_spaces()
        if not switched:
            return
        tables = {record.segments_table for record in self._store.all_spaces()}
        for name, record in switched:
            thread = self._adopt_in_background(name, record)
            current = self._image if name == IMAGE_TEXT else self._audio
            dropped = current is not None and current.store.segments_table_of(name) not in tables
            if thread is not None and dropped:
                # Its vectors were dropped (`migrate --drop-old` soon after the switch):
                # this query waits for the new model rather than fail.
                thread.join()

    def _switched_spaces(self) -> list[tuple[str, SpaceRecord]]:
        """The spaces whose model in the store is not the one this engine queries with."""
        switched = []
        for space in (self._image, self._audio):
            if space is None:
                continue
            record = self._store.space(space.name)
            if record is not None and record.model_identity != space.encoder.identity:
                switched.append((space.name, record))
        return switched

    def _adopt_in_background(
        self, name: str, record: SpaceRecord, retry: bool = False
    ) -> threading.Thread | None:
        """The thread building the new Space of `name` (started unless one runs); None
        when its model failed to load before and `retry` is not asked."""
        with self._adopt_lock:
            running = self._adopting.get(name)
            if running is not None and running.is_alive():
                return running
            if not retry and self._unloadable.get(name) == record.model_identity:
                return None
            thread = threading.Thread(
                target=self._adopt, args=(name, record), name=f"xmodal-adopt-{name}", daemon=True
            )
            self._adopting[name] = thread
            thread.start()
            return thread

    def _adopt(self, name: str, record: SpaceRecord) -> None:
        """Build a Space for the store's model of `name` (loaded, its vectors read, its
        calibration fitted) and swap it in with one assignment."""
        q = self.query
        try:
            if name == IMAGE_TEXT:
                image = create_encoder(record.model_spec, device=self.device)
                self._check_adopted(record, image)
                space: Space[Any] = Space(
                    self._store, name, image, self._ann, q.text_cache_size, q.text_batch_wait_ms
                )
            else:
                audio = create_audio_encoder(record.model_spec, device=self.device)
                self._check_adopted(record, audio)
                space = Space(
                    self._store, name, audio, self._ann, q.text_cache_size, q.text_batch_wait_ms
                )
            if space.store.segments_table_of(name) != record.segments_table:
                return  # switched again meanwhile: the next look takes up the newest
            space.warm()
            if self._live:
                space.serve_live()
        except Exception as error:
            self._unloadable[name] = record.model_identity
            log.error(
                "the %s space was switched to %s, which cannot be loaded here (%s); it is "
                "answered with %s, from its old vectors, until they are dropped",
                name,
                record.model_spec,
                error,
                (self._image if name == IMAGE_TEXT else self._audio or self._image).encoder.spec,
            )
            return
        if name == IMAGE_TEXT:
            self._image = space
        else:
            self._audio = space
        self._unloadable.pop(name, None)
        log.info("the %s space answers with %s now", name, record.model_spec)

    @staticmethod
    def _check_adopted(record: SpaceRecord, encoder: Encoder) -> None:
        if encoder.identity != record.model_identity:
            raise ModelLoadError(
                f"{record.model_spec} is {encoder.identity} here, not {record.model_identity} "
                "as the store recorded"
            )

    def _space(self, name: str) -> Space[Any]:
        for space in self._spaces():
            if space.name == name:
                return space
        raise InvalidQueryError(f"no {name} model is configured for this store")

    # -- queries ---------------------------------------------------------
    def search_text(
        self,
        text: str,
        k: int = 10,
        offset: int = 0,
        filter: dict[str, Any] | None = None,
        kinds: Sequence[str] | None = None,
        min_score: float | None = None,
        rerank: RerankRequest | bool | None = None,
        explain: int = 0,
    ) -> SearchResult:
        """Text -> media in every space, one list ordered by calibrated score.

        `min_score` (default: the engine's) drops hits calibrated below it. `rerank`
        (True for the settings' defaults) reorders the top hits with a vision-language
        model; `explain` explains that many of the page's hits (docs/rerank.md)."""
        started = time.perf_counter()
        text = (text or "").strip()
        if not text:
            raise InvalidQueryError("empty text query")
        limit = self.query.max_text_chars
        if len(text) > limit:
            raise InvalidQueryError(f"text query longer than {limit} characters")
        self._check_page(k, offset)
        query = Query(filter, kinds, self.query)
        query.validate()
        request = RerankRequest() if rerank is True else rerank or None
        top_n = 0 if request is None else self.reranking.top_n(request)
        if not 0 <= explain <= self.reranking.settings.max_explain:
            limit = self.reranking.settings.max_explain
            raise InvalidQueryError(f"explain must be between 0 and {limit}")
        depth = max(offset + k, top_n)
        threshold = self.query.min_score if min_score is None else min_score
        wanted = None if kinds is None else frozenset(kinds)
        encode_seconds = 0.0
        found: list[Found] = []
        for space in self._spaces():
            if not space.holds_any(wanted):
                continue
            view = space.view()
            if view is None:
                continue
            encoding = time.perf_counter()
            vector = space.text_vector(text)
            calibration = space.calibration(view)
            encode_seconds += time.perf_counter() - encoding
            for ranked in view.rank(vector, depth, 0, query.rows(view)):
                calibrated = calibration.score(ranked.score)
                if threshold is None or calibrated >= threshold:
                    found.append((space, view, vector, ranked, calibrated))
        ranked_at = time.perf_counter()
        # A video found by both its pictures and its sound is listed once, by the better.
        best: dict[str, Found] = {}
        for entry in sorted(found, key=lambda e: -(e[4] or 0.0)):
            best.setdefault(entry[1].snapshot.item_id(entry[3].item_code), entry)
        if request is None:
            hits = self._hits(list(best.values())[offset : offset + k])
        else:
            hits = self._hits(list(best.values())[:depth])
        done = time.perf_counter()
        timings = {
            "encode": encode_seconds * 1000.0,
            "search": (ranked_at - started - encode_seconds) * 1000.0,
            "fetch": (done - ranked_at) * 1000.0,
        }
        result = SearchResult(hits, 0.0, timings)
        if request is not None:
            result.rerank = rerank_hits(
                self.reranking,
                text,
                hits,
                request,
                self.limits,
                self._store.original_path,
                self._logit_scale,
            )
            result.hits = hits[offset : offset + k]
            timings["rerank"] = result.rerank.took_ms
        if explain:
            model = None if request is None else request.model
            result.explain = explain_hits(
                self.reranking,
                text,
                result.hits,
                explain,
                model,
                self.limits,
                self._store.original_path,
            )
            timings["explain"] = result.explain.took_ms
        result.took_ms = _ms_since(started)
        return result

    def explain(
        self, text: str, item_id: str, seconds: float | None = None, model: str | None = None
    ) -> Explanation:
        """Why an item matches a text query: the reranker's description of its picture
        (a video's frame at `seconds`, default a tenth into it) and per-word support.
        Raises ModelLoadError when the model cannot load."""
        reranker, picture = self._explained_picture(text, item_id, seconds, model)
        return explain_picture(
            reranker, text.strip(), picture, self.reranking.settings.explain_words
        )

    def explain_heatmap(
        self, text: str, item_id: str, seconds: float | None = None, model: str | None = None
    ) -> bytes:
        """A PNG of the item's picture as the reranker sees it, coloured where the
        evidence for the query lies."""
        reranker, picture = self._explained_picture(text, item_id, seconds, model)
        return heatmap_png(reranker, text.strip(), picture)

    def _explained_picture(
        self, text: str, item_id: str, seconds: float | None, model: str | None
    ) -> tuple[Any, Image.Image]:
        text = (text or "").strip()
        if not text:
            raise InvalidQueryError("empty text query")
        if len(text) > self.query.max_text_chars:
            raise InvalidQueryError(
                f"text query longer than {self.query.max_text_chars} characters"
            )
        item = self._store.find_item(item_id)  # raises UnknownItemError
        if item.status != INDEXED:
            raise InvalidQueryError(f"item {item_id!r} could not be indexed: {item.error}")
        if item.kind == MediaKind.AUDIO:
            raise InvalidQueryError("a sound has no picture to explain")
        reranker = self.reranking.reranker(model)
        segments = [] if seconds is None else [SegmentHit(item.id, 0.0, seconds, seconds)]
        hit = Hit(item, 0.0, segments)
        picture = self.reranking.picture(
            candidate(hit, self.limits, self._store.original_path), reranker
        )
        assert picture is not None
        return reranker, picture

    def search_image(
        self,
        image: bytes | str | Path | Image.Image,
        k: int = 10,
        offset: int = 0,
        filter: dict[str, Any] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> SearchResult:
        """Query by an image: a file's path (str or Path), encoded bytes, or a PIL image."""
        started = time.perf_counter()
        self._check_page(k, offset)
        if isinstance(image, str):
            image = Path(image).expanduser()
        if isinstance(image, Image.Image):
            pil = image.convert("RGB")
        else:
            pil = decode_image(image, self.limits, draft_to=self.encoder.input_size).image
        vector = self.encoder.encode_images([pil])[0]
        return self._search(
            self._image, vector, k, offset, Query(filter, kinds, self.query), started
        )

    def search_audio(
        self,
        audio: bytes | str | Path,
        k: int = 10,
        offset: int = 0,
        filter: dict[str, Any] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> SearchResult:
        """Query by a sound: an audio (or video) file's path or bytes. Its first
        `max_query_audio_seconds` are cut into the model's windows and averaged."""
        started = time.perf_counter()
        self._check_page(k, offset)
        if isinstance(audio, str):
            audio = Path(audio).expanduser()
        space = self._audio
        if space is None:
            raise InvalidQueryError("no audio model is configured for this store")
        # The file may be long: only its beginning is decoded.
        seconds = self.query.max_query_audio_seconds
        options = replace(self.audio_window_options(seconds), read_seconds=seconds)
        clips = [window.samples for window in iter_audio_windows(audio, options)]
        if not clips:
            raise InvalidQueryError("the query audio is silent")
        vectors = space.encoder.encode_audio(clips, options.sample_rate)
        vector = vectors.mean(axis=0)
        vector /= np.linalg.norm(vector) or 1.0
        return self._search(space, vector, k, offset, Query(filter, kinds, self.query), started)

    def search_similar(
        self,
        item_id: str,
        k: int = 10,
        offset: int = 0,
        filter: dict[str, Any] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> SearchResult:
        """Items similar to an indexed item (named by either id), the item itself
        excluded. An image or video is compared by its pictures, an audio file by its
        sound."""
        started = time.perf_counter()
        self._check_page(k, offset)
        for space in self._spaces():
            view = space.view()
            snapshot = None if view is None else view.snapshot
            if snapshot is None:
                continue
            # The caller's own id first (as Store.find_item), then xmodal's.
            codes = (snapshot.code_for(i) for i in (catalog_item_id(item_id), item_id))
            code = next((c for c in codes if c is not None), None)
            if code is None:
                continue
            vectors = snapshot.item_vectors(code)
            if len(vectors) == 0:
                continue  # e.g. a silent video has no sound segments
            assert view is not None
            query = vectors.mean(axis=0)
            query /= np.linalg.norm(query) or 1.0
            return self._rank(
                space, view, query, k, offset, Query(filter, kinds, self.query), started, code
            )
        item = self._store.find_item(item_id)  # raises UnknownItemError
        if item.status != INDEXED:
            raise InvalidQueryError(f"item {item_id!r} could not be indexed: {item.error}")
        raise UnknownItemError(item_id)

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        offset: int = 0,
        filter: dict[str, Any] | None = None,
        kinds: Sequence[str] | None = None,
        space: str = IMAGE_TEXT,
    ) -> SearchResult:
        """Query by a precomputed vector of one space (default image-text), e.g. one
        exported by `xmodal export`: `dim` finite values, not all zero; it is scaled to
        unit length. Raises InvalidQueryError otherwise, or without that space's model."""
        started = time.perf_counter()
        self._check_page(k, offset)
        found = self._space(space)
        query = unit_vector(vector, found.encoder.dim, space)
        return self._search(found, query, k, offset, Query(filter, kinds, self.query), started)

    # -- internals -------------------------------------------------------
    def _check_page(self, k: int, offset: int) -> None:
        if not 1 <= k <= self.query.max_k:
            raise InvalidQueryError(f"k must be between 1 and {self.query.max_k}")
        if offset < 0:
            raise InvalidQueryError("offset must be >= 0")

    def _search(
        self,
        space: Space[Any],
        vector: np.ndarray,
        k: int,
        offset: int,
        query: Query,
        started: float,
    ) -> SearchResult:
        view = space.view()
        if view is None:
            query.validate()
            return SearchResult([], _ms_since(started))
        return self._rank(space, view, vector, k, offset, query, started)

    def _rank(
        self,
        space: Space[Any],
        view: SpaceView,
        vector: np.ndarray,
        k: int,
        offset: int,
        query: Query,
        started: float,
        exclude_code: int | None = None,
    ) -> SearchResult:
        encoded = time.perf_counter()
        ranked = view.rank(vector, k, offset, query.rows(view), exclude_code)
        ranked_at = time.perf_counter()
        hits = self._hits([(space, view, vector, r, None) for r in ranked])
        done = time.perf_counter()
        timings = {
            "encode": (encoded - started) * 1000.0,
            "search": (ranked_at - encoded) * 1000.0,
            "fetch": (done - ranked_at) * 1000.0,
        }
        return SearchResult(hits, _ms_since(started), timings)

    def _hits(self, found: list[Found]) -> list[Hit]:
        """Hits with their item records (one lookup per space) and segments."""
        records: dict[int, ItemRecord] = {}
        by_view: dict[int, list[int]] = {}
        for position, entry in enumerate(found):
            by_view.setdefault(id(entry[1]), []).append(position)
        for positions in by_view.values():
            snapshot = found[positions[0]][1].snapshot
            codes = [found[p][3].item_code for p in positions]
            records.update(zip(positions, snapshot.records(codes), strict=True))
        hits = []
        for position, (space, view, vector, ranked, calibrated) in enumerate(found):
            record = records[position]
            if record.kind == MediaKind.IMAGE:
                segments = segment_hits(view.snapshot, ranked)
            else:
                segments = best_moments(
                    view.snapshot,
                    ranked.item_code,
                    vector,
                    self.query.moment_margin,
                    self.query.max_moments,
                )
            hits.append(Hit(record, ranked.score, segments, space.name, calibrated))
        return hits


# A ranked item with where it was found: space, view, query vector, calibrated score.
Found = tuple[Space[Any], SpaceView, np.ndarray, RankedItem, float | None]


@dataclass(frozen=True)
class Query:
    """What restricts a query's results: a metadata filter and media kinds."""

    filter: dict[str, Any] | None = None
    kinds: Sequence[str] | None = None
    limits: QuerySettings = QuerySettings()  # the filter's caps

    def validate(self) -> dict[str, Any]:
        if self.kinds is not None:
            unknown = set(self.kinds) - set(MediaKind)
            if unknown or not self.kinds:
                raise InvalidQueryError(
                    f"kinds must be some of {sorted(k.value for k in MediaKind)}"
                )
        return validate_filter(self.filter, self.limits)

    def rows(self, view: SpaceView) -> RowFilter | None:
        spec = self.validate()
        return view.row_filter(spec, None if self.kinds is None else tuple(sorted(self.kinds)))


def model_for_store(
    store: Store, requested: str | None, space: str = IMAGE_TEXT, default: str = DEFAULT_MODEL
) -> str:
    """The model to use: the one asked for, else the store's for the space, else the default."""
    if requested:
        return requested
    record = store.space(space)
    return record.model_spec if record is not None else default


def audio_model_for_store(store: Store, requested: str | None) -> str | None:
    """The audio model, as model_for_store; None when sound is switched off ("none")."""
    if requested and requested.strip().lower() == NO_AUDIO_MODEL:
        return None
    return model_for_store(store, requested, AUDIO_TEXT, DEFAULT_AUDIO_MODEL)


def audio_window_options(
    encoder: AudioTextEncoder, max_seconds: float, hop_seconds: float = 0.0
) -> AudioOptions:
    """Windows cut to what an audio model takes (its rate and clip length); a hop of
    0 means one window length."""
    window = encoder.window_seconds
    return AudioOptions(
        sample_rate=encoder.sample_rate,
        window_seconds=window,
        hop_seconds=hop_seconds or window,
        max_seconds=max_seconds,
    )


def unit_vector(values: np.ndarray | Sequence[float], dim: int, space: str) -> np.ndarray:
    """A query vector of a space scaled to unit length (float32); InvalidQueryError when
    it has not `dim` values, holds one that is not finite, or is all zeros."""
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1 or len(vector) != dim:
        count = len(vector) if vector.ndim == 1 else "x".join(map(str, vector.shape))
        raise InvalidQueryError(f"vector has {count} values; the {space} space takes {dim}")
    if not np.isfinite(vector).all():
        raise InvalidQueryError("vector values must be finite numbers (no NaN or infinity)")
    # Scaled by its largest value first: the norm of values near 1e308 overflows.
    largest = float(np.abs(vector).max())
    if largest == 0.0:
        raise InvalidQueryError("vector is all zeros: it points nowhere")
    vector = vector / largest
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


__all__ = ["Engine", "audio_model_for_store", "audio_window_options", "model_for_store"]
