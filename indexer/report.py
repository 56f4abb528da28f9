"""What an indexing run did, for the end summary and for callers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageTimes:
    """Seconds spent per stage. Decode is summed over workers, so it can exceed wall time."""

    discover: float = 0.0
    # Loading the models; the image model loads beside discovery and decoding, so this
    # overlaps the other stages.
    load: float = 0.0
    decode: float = 0.0
    encode: float = 0.0
    write: float = 0.0
    index: float = 0.0  # bringing the ANN index up to date and saving it
    wall: float = 0.0


@dataclass
class IndexReport:
    indexed: int = 0  # new items embedded
    updated: int = 0  # items whose content changed, re-embedded
    unchanged: int = 0  # skipped (same size and mtime, or same content hash)
    removed: int = 0  # items whose files are gone
    duplicates: int = 0  # items whose bytes equal an already embedded item: vector reused
    ignored: int = 0  # files that are not media
    # Left alone, unread, (path, why): a link out of its root, a FIFO, a device...
    skipped: list[tuple[str, str]] = field(default_factory=list)
    segments: int = 0  # vectors written (one per image, one per video keyframe)
    # Inputs the models computed vectors for (pictures, keyframes, sound windows): what
    # a run cost in model time; a vector reused by content hash is not counted.
    encoded: int = 0
    # Items whose duplicated rows (left by writers racing before the writer lock) were
    # merged into one at the start of the run, and embedded again.
    repaired: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    # Indexed, but not whole: (path, what was skipped), e.g. corrupt packets in a video.
    warnings: list[tuple[str, str]] = field(default_factory=list)
    # About the whole run, said once: e.g. that no sound was indexed, and why.
    notices: list[str] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)
    index_kind: str = "exact"  # the vector index queries will use ("exact": none)

    @property
    def embedded(self) -> int:
        return self.indexed + self.updated

    @property
    def items_per_second(self) -> float:
        done = self.indexed + self.updated + len(self.failed)
        return done / self.times.wall if self.times.wall > 0 else 0.0

    def summary(self) -> str:
        return (
            f"indexed {self.indexed}, updated {self.updated}, unchanged {self.unchanged}, "
            f"removed {self.removed}, failed {len(self.failed)}"
            + (f", skipped {len(self.skipped)}" if self.skipped else "")
            + (f", duplicates {self.duplicates}" if self.duplicates else "")
            + (f", repaired {self.repaired} duplicated item(s)" if self.repaired else "")
        )
