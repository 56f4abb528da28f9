"""An ANN index kept in step with one space of the store.

Labels are positions in a growing key table: label L stands for the segment whose
key is `keys[L]`, where a key hashes the segment id together with its vector's
bytes. A re-embedded segment (same id, new vector) therefore gets a new key, so an
updated item can never be found through its old vector.

A writer saves the index with every label's vector (`vectors.npy`) as a generation
(`IndexDirectory`); a server memory-maps both and never changes them: rows deleted
since are masked out per query, rows added since are ranked exactly beside it
(search/space/labels.py), and a merge makes a new index (`extended`) rather than
changing the one queries read. Labels are never reused, so a label in flight in a
concurrent query can only point to the segment it was given for, or to nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xmodal.search.errors import StoreError
from xmodal.search.locks import ReadWriteLock

from .base import VectorIndex
from .faiss_index import FaissIndex, create_index

STATE_FORMAT = 1
SAVED_FILES = ("index.faiss", "keys.npy", "alive.npy")
# Saved since issue 17 (older generations lack it: their vectors are then read from the
# store and kept in memory): every label's vector, memory-mapped by servers.
VECTORS_FILE = "vectors.npy"
# Removed labels still cost graph traversal (HNSW cannot delete): rebuild past this share.
REBUILD_DEAD_SHARE = 0.25

_MIX = np.uint64(0x9E3779B97F4A7C15)
_HASH_ROWS = 32_768


def segment_keys(segment_ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """One int64 per segment from its id and the exact bytes of its vector."""
    id_hash = pd.util.hash_array(np.asarray(segment_ids, dtype=object))
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    # The vector's bits as 64-bit words (two floats each; one float each at an odd dim).
    word = np.uint64 if vectors.shape[1] % 2 == 0 else np.uint32
    width = vectors.shape[1] * 4 // np.dtype(word).itemsize
    # Odd per-column multipliers, summed with wrap-around: a position-sensitive hash of
    # the exact bits, computed column-wise by numpy rather than row by row in Python.
    multipliers = np.random.default_rng(0x5EED).integers(
        1, 2**63, size=width, dtype=np.uint64
    ) | np.uint64(1)
    vector_hash = np.empty(len(vectors), np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, len(vectors), _HASH_ROWS):  # bounded temporaries
            words = vectors[start : start + _HASH_ROWS].view(word)
            vector_hash[start : start + _HASH_ROWS] = (words * multipliers).sum(
                axis=1, dtype=np.uint64
            )
        mixed = (id_hash ^ vector_hash) * _MIX
    mixed ^= mixed >> np.uint64(29)
    return (mixed & np.uint64(0x7FFF_FFFF_FFFF_FFFF)).astype(np.int64)


LabelVectors = Callable[[np.ndarray], np.ndarray]  # labels -> (n, dim) float32


class SyncedIndex:
    """A VectorIndex plus the key of each label, which labels were alive when it was
    made, and where each label's full vector is (`vectors`: the saved file, memory-mapped,
    or the rows of the snapshot it was built from). A server never changes one while
    it serves: a merge makes a new one (`extended`)."""

    def __init__(
        self,
        index: VectorIndex,
        keys: np.ndarray | None = None,
        alive: np.ndarray | None = None,
        store_version: tuple[int, int] | None = None,
        vectors: LabelVectors | None = None,
        mapped: np.ndarray | None = None,
    ):
        self.index = index
        self.keys = np.zeros(0, np.int64) if keys is None else keys
        self.alive = np.zeros(0, bool) if alive is None else alive
        self.store_version = store_version
        self.mapped = mapped  # the saved vectors by label, memory-mapped (None: not saved)
        self.vectors = vectors if vectors is not None else self._mapped_vectors
        if isinstance(index, FaissIndex):  # IVF-PQ re-ranks its candidates on these
            index.full_vectors = self.vectors
        # FAISS indexes are not safe to change mid-search: writers that grow one in place
        # (an indexing run's own copy) hold this; a served one is never changed.
        self.lock = ReadWriteLock()

    def _mapped_vectors(self, labels: np.ndarray) -> np.ndarray:
        if self.mapped is None:
            raise StoreError("this index holds no vectors of its own")
        return np.asarray(self.mapped[labels], dtype=np.float32)

    @property
    def kind(self) -> str:
        return self.index.kind

    def __len__(self) -> int:
        return int(self.alive.sum())

    @property
    def labels(self) -> int:
        return len(self.keys)

    @property
    def dead_share(self) -> float:
        return 0.0 if len(self.keys) == 0 else 1.0 - len(self) / len(self.keys)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and labels of the k best, best first (-1 labels pad a short answer);
        `allowed` (a bool mask over labels) restricts the candidates before ranking."""
        with self.lock.reading():
            scores, labels = self.index.search(query[None, :], k, allowed=allowed)
        return scores[0], labels[0]

    @classmethod
    def build(
        cls,
        kind: str,
        dim: int,
        keys: np.ndarray,
        vectors: LabelVectors,
        store_version: tuple[int, int],
        batch: int = 65_536,
        **params: Any,
    ) -> SyncedIndex:
        """A new index of `len(keys)` vectors, labels 0..n-1 (`vectors(labels)` gives them).
        IVF-PQ trains on the whole first batch-sized sample it is given."""
        index = create_index(kind, dim, **params)
        count = len(keys)
        if kind == "ivfpq" and count:
            # The quantizers train on the data: give the first add a sample of all of it.
            limit = params.get("train_size") or 0
            sample = np.sort(
                np.random.default_rng(0).choice(
                    count, size=min(count, max(limit, 256 * 1024)), replace=False
                )
            )
            if isinstance(index, FaissIndex):
                index.train(vectors(sample))
        for start in range(0, count, batch):
            labels = np.arange(start, min(start + batch, count), dtype=np.int64)
            index.add(vectors(labels), labels)
        return cls(index, keys.copy(), np.ones(count, bool), store_version, vectors)

    def extended(
        self,
        remove: np.ndarray,
        keys: np.ndarray,
        vectors: np.ndarray,
        store_version: tuple[int, int],
        more_vectors: LabelVectors,
    ) -> SyncedIndex:
        """A copy with the labels `remove` taken out and `vectors` added under new labels
        (len(self.keys) onwards); `more_vectors(new labels - first new)` gives those again
        for re-ranking. This one is left as it is, so queries go on reading it."""
        if not isinstance(self.index, FaissIndex):
            raise StoreError(f"a {self.kind} index cannot be copied")
        with self.lock.reading():
            copied = self.index.copy()
        if len(remove):
            copied.remove(remove.astype(np.int64))
        first = len(self.keys)
        labels = np.arange(first, first + len(keys), dtype=np.int64)
        if len(labels):
            copied.add(vectors, labels)
        alive = np.concatenate([self.alive, np.ones(len(keys), bool)])
        alive[remove] = False
        old = self.vectors

        def by_label(wanted: np.ndarray) -> np.ndarray:
            wanted = np.asarray(wanted, np.int64)
            out = np.empty((len(wanted), copied.dim), np.float32)
            before = wanted < first
            if before.any():
                out[before] = old(wanted[before])
            if not before.all():
                out[~before] = more_vectors(wanted[~before] - first)
            return out

        return SyncedIndex(
            copied, np.concatenate([self.keys, keys]), alive, store_version, by_label
        )

    # -- persistence -----------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write into `directory` (created; the caller makes the switch atomic). Every file
        is on disk (fsynced) when this returns; state.json records their sizes, so that
        a file cut short later is noticed before it is read."""
        directory.mkdir(parents=True, exist_ok=True)
        self.index.save(directory / "index.faiss")
        np.save(directory / "keys.npy", self.keys)
        np.save(directory / "alive.npy", self.alive)
        self._save_vectors(directory / VECTORS_FILE)
        state = {
            "format": STATE_FORMAT,
            "kind": self.kind,
            "store_version": list(self.store_version or (-1, -1)),
            "count": len(self),
            "labels": len(self.keys),
            "saved_at": time.time(),
            "bytes": {
                name: (directory / name).stat().st_size for name in (*SAVED_FILES, VECTORS_FILE)
            },
        }
        (directory / "state.json").write_text(json.dumps(state, indent=1))
        for name in (*SAVED_FILES, VECTORS_FILE, "state.json"):
            fsync_file(directory / name)
        fsync_folder(directory)

    def _save_vectors(self, path: Path, batch: int = 65_536) -> None:
        """Every label's vector, written a batch at a time (never all in memory)."""
        out = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.float32, shape=(len(self.keys), self.index.dim)
        )
        for start in range(0, len(self.keys), batch):
            labels = np.arange(start, min(start + batch, len(self.keys)), dtype=np.int64)
            out[start : start + len(labels)] = self.vectors(labels)
        out.flush()
        del out

    @classmethod
    def load(cls, directory: Path, mmap: bool = True) -> SyncedIndex:
        """A saved index; StoreError when any of its files is missing, cut short or
        inconsistent with the others (checked before FAISS reads the index)."""
        state = json.loads((directory / "state.json").read_text())
        if state.get("format") != STATE_FORMAT:
            raise StoreError(f"index in {directory} has format {state.get('format')}")
        check_sizes(directory, state)
        keys = np.load(directory / "keys.npy", allow_pickle=False)
        alive = np.load(directory / "alive.npy", allow_pickle=False)
        labels = int(state.get("labels", len(keys)))
        if keys.shape != (labels,) or alive.shape != (labels,) or alive.dtype != np.bool_:
            raise StoreError(
                f"index in {directory}: keys {keys.shape} and alive {alive.shape} do not "
                f"match its {labels} labels"
            )
        if int(alive.sum()) != int(state.get("count", alive.sum())):
            raise StoreError(f"index in {directory}: alive.npy does not match its state")
        index = FaissIndex.load(directory / "index.faiss", mmap=mmap)
        mapped = None
        if (directory / VECTORS_FILE).exists():
            mapped = np.load(directory / VECTORS_FILE, mmap_mode="r" if mmap else None)
            if mapped.shape != (labels, index.dim):
                raise StoreError(
                    f"index in {directory}: {VECTORS_FILE} holds {mapped.shape}, not "
                    f"({labels}, {index.dim})"
                )
        version = tuple(state["store_version"])
        return cls(
            index,
            keys.astype(np.int64, copy=False),
            alive,
            (int(version[0]), int(version[1])),
            mapped=mapped,
        )


def check_sizes(directory: Path, state: dict[str, Any]) -> None:
    """StoreError unless every saved file exists with the size the save recorded (saves
    before sizes were recorded: exists and is not empty)."""
    sizes = state.get("bytes") or {}
    for name in (*SAVED_FILES, VECTORS_FILE):
        if name == VECTORS_FILE and name not in sizes:
            continue  # a generation saved before vectors were
        try:
            size = (directory / name).stat().st_size
        except OSError as error:
            raise StoreError(f"index in {directory}: {name} missing ({error})") from error
        expected = sizes.get(name)
        if (expected is not None and size != int(expected)) or size == 0:
            raise StoreError(
                f"index in {directory}: {name} has {size} bytes, the save wrote "
                f"{expected if expected is not None else 'more'}"
            )


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(path: Path) -> None:
    """Make a folder's entries (new names, renames) durable; a no-op where folders
    cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


class IndexDirectory:
    """Saved generations of one space's index: `<root>/<generation>/` plus a CURRENT
    file naming the live one, replaced atomically, so a reader never sees half a save
    and a crash mid-save leaves the previous generation in place."""

    def __init__(self, root: Path):
        self.root = root

    def current(self) -> Path | None:
        try:
            name = (self.root / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return None
        path = self.root / name
        return path if (path / "state.json").exists() else None

    def state(self, generation: Path | None = None) -> dict[str, Any] | None:
        """The saved state of a generation (default: the current one)."""
        path = generation or self.current()
        if path is None:
            return None
        try:
            state = json.loads((path / "state.json").read_text())
        except (OSError, ValueError):  # damaged: as if nothing were saved, so it is rebuilt
            return None
        return state if isinstance(state, dict) else None

    def intact(self, generation: Path | None = None) -> bool:
        """Whether a generation's files are all there at the sizes its save recorded
        (cheap: no file is read); a damaged one is rebuilt, not trusted."""
        path = generation or self.current()
        state = None if path is None else self.state(path)
        if path is None or state is None:
            return False
        try:
            check_sizes(path, state)
        except StoreError:
            return False
        return True

    def loads(self) -> bool:
        """Whether the current generation loads in full (reads it: for repairs)."""
        path = self.current()
        if path is None:
            return False
        try:
            SyncedIndex.load(path, mmap=True)
        except Exception:  # any way of failing means: rebuild it
            return False
        return True

    def save(self, synced: SyncedIndex) -> Path:
        """Write a new generation and switch CURRENT to it. The order makes a crash or a
        power cut at any point leave either the old generation or the new one whole:
        files written and fsynced, the folder renamed and the parent fsynced, then the
        pointer written, fsynced, renamed over CURRENT and the parent fsynced again."""
        self.root.mkdir(parents=True, exist_ok=True)
        generation = f"{time.time_ns():020d}-{os.getpid()}"
        staging = self.root / f"{generation}.partial"
        synced.save(staging)
        final = self.root / generation
        staging.rename(final)
        fsync_folder(self.root)
        pointer = self.root / f"CURRENT.{os.getpid()}"
        pointer.write_text(generation)
        fsync_file(pointer)
        pointer.replace(self.root / "CURRENT")
        fsync_folder(self.root)
        self._remove_old(keep=generation)
        return final

    def _remove_old(self, keep: str) -> None:
        # Processes that memory-mapped an old generation keep reading it: unlinked files
        # live on until unmapped.
        for child in self.root.iterdir():
            if child.is_dir() and child.name != keep:
                shutil.rmtree(child, ignore_errors=True)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
