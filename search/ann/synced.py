"""An ANN index kept in step with one space of the store.

Labels are positions in a growing key table: label L stands for the segment whose
key is `keys[L]`, where a key hashes the segment id together with its vector's
bytes. A re-embedded segment (same id, new vector) therefore gets a new key, so an
updated item can never be found through its old vector.

`sync` brings the index to a snapshot of the store incrementally: keys the index
lacks are added under fresh labels, keys the store no longer has are removed.
Labels are never reused, so a label in flight in a concurrent query can only point
to the segment it was given for, or to nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SyncReport:
    added: int
    removed: int
    seconds: float


class LabelMap:
    """Labels to the rows of one snapshot and back."""

    def __init__(self, label_of_row: np.ndarray, labels: int):
        self.label_of_row = label_of_row
        self.row_of_label = np.full(labels, -1, np.int64)
        self.row_of_label[label_of_row] = np.arange(len(label_of_row), dtype=np.int64)

    def rows(self, labels: np.ndarray) -> np.ndarray:
        """Rows of labels; -1 for labels this snapshot does not have (added after it)."""
        inside = (labels >= 0) & (labels < len(self.row_of_label))
        rows = np.full(len(labels), -1, np.int64)
        rows[inside] = self.row_of_label[labels[inside]]
        return rows


class SyncedIndex:
    """A VectorIndex plus the key of each label and which labels are alive."""

    def __init__(
        self,
        index: VectorIndex,
        keys: np.ndarray | None = None,
        alive: np.ndarray | None = None,
        store_version: tuple[int, int] | None = None,
    ):
        self.index = index
        self.keys = np.zeros(0, np.int64) if keys is None else keys
        self.alive = np.zeros(0, bool) if alive is None else alive
        self.store_version = store_version
        # Searches read while a sync writes: FAISS indexes are not safe to change mid-search.
        self.lock = ReadWriteLock()

    @property
    def kind(self) -> str:
        return self.index.kind

    def __len__(self) -> int:
        return int(self.alive.sum())

    @property
    def dead_share(self) -> float:
        return 0.0 if len(self.keys) == 0 else 1.0 - len(self) / len(self.keys)

    def sync(
        self, keys: np.ndarray, vectors: np.ndarray, store_version: tuple[int, int]
    ) -> tuple[LabelMap, SyncReport]:
        """Make the index hold exactly the snapshot rows `keys`/`vectors`."""
        with self.lock.writing():
            return self._sync(keys, vectors, store_version)

    def _sync(
        self, keys: np.ndarray, vectors: np.ndarray, store_version: tuple[int, int]
    ) -> tuple[LabelMap, SyncReport]:
        started = time.perf_counter()
        live = np.flatnonzero(self.alive)
        known = pd.Index(self.keys[live])
        if not known.is_unique or not pd.Index(keys).is_unique:
            raise StoreError("duplicate segment keys: rebuild the index (xmodal reindex)")
        found = known.get_indexer(keys)
        label_of_row = np.full(len(keys), -1, np.int64)
        label_of_row[found >= 0] = live[found[found >= 0]]
        kept = np.zeros(len(self.keys), bool)
        kept[label_of_row[found >= 0]] = True
        gone = np.flatnonzero(self.alive & ~kept)
        if len(gone):
            self.index.remove(gone.astype(np.int64))
            self.alive[gone] = False
        new_rows = np.flatnonzero(found < 0)
        if len(new_rows):
            first = len(self.keys)
            labels = np.arange(first, first + len(new_rows), dtype=np.int64)
            self.index.add(vectors[new_rows], labels)
            self.keys = np.concatenate([self.keys, keys[new_rows]])
            self.alive = np.concatenate([self.alive, np.ones(len(new_rows), bool)])
            label_of_row[new_rows] = labels
        self.store_version = store_version
        report = SyncReport(len(new_rows), len(gone), time.perf_counter() - started)
        return LabelMap(label_of_row, len(self.keys)), report

    def search_rows(
        self,
        query: np.ndarray,
        k: int,
        label_map: LabelMap,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and snapshot rows of the k best segments, best first; `allowed`
        (a bool mask over labels) restricts the candidates before ranking."""
        with self.lock.reading():
            scores, labels = self.index.search(query[None, :], k, allowed=allowed)
        rows = label_map.rows(labels[0])
        found = rows >= 0
        return scores[0][found], rows[found]

    # -- persistence -----------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write into `directory` (created; the caller makes the switch atomic). Every file
        is on disk (fsynced) when this returns; state.json records their sizes, so that
        a file cut short later is noticed before it is read."""
        directory.mkdir(parents=True, exist_ok=True)
        self.index.save(directory / "index.faiss")
        np.save(directory / "keys.npy", self.keys)
        np.save(directory / "alive.npy", self.alive)
        state = {
            "format": STATE_FORMAT,
            "kind": self.kind,
            "store_version": list(self.store_version or (-1, -1)),
            "count": len(self),
            "labels": len(self.keys),
            "saved_at": time.time(),
            "bytes": {name: (directory / name).stat().st_size for name in SAVED_FILES},
        }
        (directory / "state.json").write_text(json.dumps(state, indent=1))
        for name in (*SAVED_FILES, "state.json"):
            fsync_file(directory / name)
        fsync_folder(directory)

    @classmethod
    def load(
        cls,
        directory: Path,
        full_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
        mmap: bool = True,
    ) -> SyncedIndex:
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
        index = FaissIndex.load(directory / "index.faiss", mmap=mmap, full_vectors=full_vectors)
        version = tuple(state["store_version"])
        return cls(
            index, keys.astype(np.int64, copy=False), alive, (int(version[0]), int(version[1]))
        )


def check_sizes(directory: Path, state: dict[str, Any]) -> None:
    """StoreError unless every saved file exists with the size the save recorded (saves
    before sizes were recorded: exists and is not empty)."""
    sizes = state.get("bytes") or {}
    for name in SAVED_FILES:
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


def empty_index(kind: str, dim: int, **params: Any) -> SyncedIndex:
    """A fresh index; its first sync adds a whole snapshot (labels 0..n-1 in row order)."""
    index: VectorIndex = create_index(kind, dim, **params)
    return SyncedIndex(index)


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
