"""TextBatcher: concurrent encode() calls share forward passes of a (fake) text tower."""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from xmodal.search.encoders.batching import TextBatcher

DIM = 16
TIMEOUT = 5.0


def fake_vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


class FakeEncoder:
    """Deterministic encode_texts: records each pass, can sleep, hold a pass, or fail."""

    def __init__(self, delay: float = 0.0, poison: str | None = None):
        self.delay = delay
        self.poison = poison
        self.batches: list[list[str]] = []
        self.gates: dict[int, threading.Event] = {}  # pass number -> held until set
        self.entered: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def hold(self, number: int) -> threading.Event:
        self.gates[number] = threading.Event()
        self.entered[number] = threading.Event()
        return self.gates[number]

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            number = len(self.batches)
            self.batches.append(list(texts))
        if number in self.gates:
            self.entered[number].set()
            assert self.gates[number].wait(TIMEOUT), "test never released the pass"
        if self.delay:
            time.sleep(self.delay)
        if self.poison is not None and self.poison in texts:
            raise RuntimeError(f"boom on {self.poison}")
        return np.stack([fake_vector(t) for t in texts])


class Caller(threading.Thread):
    def __init__(self, batcher: TextBatcher, text: str, start_together: threading.Barrier | None):
        super().__init__(daemon=True)
        self.batcher, self.text, self.barrier = batcher, text, start_together
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        if self.barrier is not None:
            self.barrier.wait(TIMEOUT)
        try:
            self.vector = self.batcher.encode(self.text)
        except BaseException as error:
            self.error = error

    def result(self) -> np.ndarray:
        self.join(TIMEOUT)
        assert not self.is_alive(), f"caller for {self.text!r} still waiting"
        assert self.error is None, self.error
        assert self.vector is not None
        return self.vector


def call(batcher: TextBatcher, text: str) -> Caller:
    caller = Caller(batcher, text, None)
    caller.start()
    return caller


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def start_held_pass(fake: FakeEncoder, batcher: TextBatcher, text: str = "first") -> Caller:
    """A caller whose pass (pass 0) is running and held until the returned gate is set."""
    gate = fake.hold(0)
    first = call(batcher, text)
    assert fake.entered[0].wait(TIMEOUT)
    assert not gate.is_set()
    return first


def test_single_caller_runs_at_once_alone() -> None:
    fake = FakeEncoder()
    batcher = TextBatcher(fake.encode_texts)
    texts = ["a red circle", "a blue square", "a red circle", "a green star"]
    for text in texts:
        np.testing.assert_array_equal(batcher.encode(text), fake_vector(text))
    assert fake.batches == [[t] for t in texts]
    stats = batcher.stats()
    assert (stats.passes, stats.requests, stats.largest_batch) == (4, 4, 1)
    assert batcher.pending == 0


def test_results_equal_unbatched_under_concurrency() -> None:
    fake = FakeEncoder(delay=0.02)
    batcher = TextBatcher(fake.encode_texts)
    texts = [f"text {i}" for i in range(40)]
    barrier = threading.Barrier(len(texts))
    callers = [Caller(batcher, t, barrier) for t in texts]
    for caller in callers:
        caller.start()
    for caller in callers:
        vector = caller.result()
        assert vector.dtype == np.float32 and vector.shape == (DIM,)
        np.testing.assert_array_equal(vector, fake_vector(caller.text))
    assert sorted(t for batch in fake.batches for t in batch) == sorted(texts)


def test_slow_pass_gathers_concurrent_callers() -> None:
    fake = FakeEncoder(delay=0.1)
    batcher = TextBatcher(fake.encode_texts)
    texts = [f"a shape number {i}" for i in range(16)]
    barrier = threading.Barrier(len(texts))
    callers = [Caller(batcher, t, barrier) for t in texts]
    for caller in callers:
        caller.start()
    for caller in callers:
        np.testing.assert_array_equal(caller.result(), fake_vector(caller.text))
    stats = batcher.stats()
    assert stats.passes < len(texts)
    assert stats.largest_batch > 1
    assert stats.requests == stats.texts_encoded == len(texts)
    assert stats.passes == len(fake.batches)


def test_callers_arriving_during_a_pass_share_the_next_one() -> None:
    fake = FakeEncoder()
    batcher = TextBatcher(fake.encode_texts)
    first = start_held_pass(fake, batcher)
    others = [call(batcher, f"other {i}") for i in range(15)]
    wait_until(lambda: batcher.pending == 15)
    fake.gates[0].set()
    np.testing.assert_array_equal(first.result(), fake_vector("first"))
    for caller in others:
        np.testing.assert_array_equal(caller.result(), fake_vector(caller.text))
    assert [len(b) for b in fake.batches] == [1, 15]
    assert batcher.stats().largest_batch == 15


def test_max_batch_splits_the_queue_in_arrival_order() -> None:
    fake = FakeEncoder()
    batcher = TextBatcher(fake.encode_texts, max_batch=4)
    first = start_held_pass(fake, batcher)
    others: list[Caller] = []
    for i in range(10):
        others.append(call(batcher, f"t{i}"))
        wait_until(lambda: batcher.pending == len(others))  # fixes the arrival order
    fake.gates[0].set()
    for caller in [first, *others]:
        np.testing.assert_array_equal(caller.result(), fake_vector(caller.text))
    assert fake.batches == [
        ["first"],
        ["t0", "t1", "t2", "t3"],
        ["t4", "t5", "t6", "t7"],
        ["t8", "t9"],
    ]


def test_duplicates_in_a_pass_are_encoded_once() -> None:
    fake = FakeEncoder()
    batcher = TextBatcher(fake.encode_texts)
    first = start_held_pass(fake, batcher)
    texts = ["same"] * 6 + ["other"] * 2
    callers = [call(batcher, t) for t in texts]
    wait_until(lambda: batcher.pending == len(texts))
    fake.gates[0].set()
    first.result()
    vectors = [caller.result() for caller in callers]
    for caller, vector in zip(callers, vectors, strict=True):
        np.testing.assert_array_equal(vector, fake_vector(caller.text))
    assert fake.batches[1] == ["same", "other"]
    stats = batcher.stats()
    assert (stats.passes, stats.requests, stats.texts_encoded) == (2, 9, 3)
    # Each caller owns its vector, as if it had been encoded alone.
    vectors[0][0] = 42.0
    assert vectors[1][0] != 42.0


def test_a_failing_pass_fails_exactly_its_callers_and_the_batcher_recovers() -> None:
    fake = FakeEncoder(poison="poison")
    batcher = TextBatcher(fake.encode_texts)
    first = start_held_pass(fake, batcher)
    failing = [call(batcher, t) for t in ("poison", "b", "c")]
    wait_until(lambda: batcher.pending == 3)
    fake.hold(1)
    fake.gates[0].set()
    assert fake.entered[1].wait(TIMEOUT)  # pass 1 (poison, b, c) is running
    later = call(batcher, "d")
    wait_until(lambda: batcher.pending == 1)
    fake.gates[1].set()

    np.testing.assert_array_equal(first.result(), fake_vector("first"))
    np.testing.assert_array_equal(later.result(), fake_vector("d"))
    for caller in failing:
        caller.join(TIMEOUT)
        assert isinstance(caller.error, RuntimeError), caller.text
        assert str(caller.error) == "boom on poison"
    assert fake.batches == [["first"], ["poison", "b", "c"], ["d"]]
    # A failing pass on the calling thread itself, then normal service again.
    with pytest.raises(RuntimeError, match="boom"):
        batcher.encode("poison")
    np.testing.assert_array_equal(batcher.encode("b"), fake_vector("b"))
    stats = batcher.stats()
    assert (stats.passes, stats.failed_passes, batcher.pending) == (5, 2, 0)


def test_wrong_number_of_rows_is_an_error_for_the_pass() -> None:
    batcher = TextBatcher(lambda texts: np.zeros((len(texts) + 1, DIM), np.float32))
    with pytest.raises(ValueError, match="shape"):
        batcher.encode("x")
    assert batcher.stats().failed_passes == 1


def crowd_of_four(fake: FakeEncoder, batcher: TextBatcher) -> None:
    """Pass 0 alone, then pass 1 with four requests."""
    first = start_held_pass(fake, batcher)
    crowd = [call(batcher, f"crowd {i}") for i in range(4)]
    wait_until(lambda: batcher.pending == 4)
    fake.gates[0].set()
    for caller in [first, *crowd]:
        caller.result()
    assert [len(b) for b in fake.batches] == [1, 4]


def test_with_max_wait_a_lone_caller_does_not_wait() -> None:
    fake = FakeEncoder()
    batcher = TextBatcher(fake.encode_texts, max_wait_ms=60_000)
    for text in ("a", "b", "c"):
        # Would still be waiting (for a minute) if a lone leader waited for company.
        assert np.array_equal(call(batcher, text).result(), fake_vector(text))
    assert fake.batches == [["a"], ["b"], ["c"]]


def test_with_max_wait_a_leader_waits_for_as_many_as_the_last_pass_had() -> None:
    fake = FakeEncoder()
    batcher = TextBatcher(fake.encode_texts, max_wait_ms=60_000)
    crowd_of_four(fake, batcher)
    leader = call(batcher, "leader")
    wait_until(lambda: batcher._busy)  # white box: "leader" leads, and is gathering
    followers: list[Caller] = []
    for i in range(3):
        wait_until(lambda: batcher.pending == len(followers) and len(fake.batches) == 2)
        followers.append(call(batcher, f"follower {i}"))
    for caller in [leader, *followers]:
        np.testing.assert_array_equal(caller.result(), fake_vector(caller.text))
    assert fake.batches[2] == ["leader", "follower 0", "follower 1", "follower 2"]


def test_with_max_wait_a_lone_caller_after_a_crowd_waits_once() -> None:
    fake = FakeEncoder()
    batcher = TextBatcher(fake.encode_texts, max_wait_ms=20)
    crowd_of_four(fake, batcher)
    # The first lone call times out waiting for company; the next does not wait
    # (it would still be waiting, for a minute, when result() gives up).
    assert np.array_equal(batcher.encode("alone"), fake_vector("alone"))
    batcher.max_wait_ms = 60_000
    assert np.array_equal(call(batcher, "x").result(), fake_vector("x"))
    assert fake.batches[2:] == [["alone"], ["x"]]


class _Interrupted(Exception):
    pass


def test_an_interrupted_waiter_leaves_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        fake = FakeEncoder()
        batcher = TextBatcher(fake.encode_texts)
        first = start_held_pass(fake, batcher)
        main = threading.main_thread().ident
        assert main is not None

        def interrupt_when_queued() -> None:
            wait_until(lambda: batcher.pending == 1)
            signal.pthread_kill(main, signal.SIGUSR1)

        threading.Thread(target=interrupt_when_queued, daemon=True).start()
        with pytest.raises(_Interrupted):
            batcher.encode("never encoded")
        assert batcher.pending == 0
    finally:
        signal.signal(signal.SIGUSR1, previous)
    fake.gates[0].set()
    first.result()
    np.testing.assert_array_equal(batcher.encode("after"), fake_vector("after"))
    assert fake.batches == [["first"], ["after"]]


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        TextBatcher(FakeEncoder().encode_texts, max_batch=0)
    with pytest.raises(ValueError):
        TextBatcher(FakeEncoder().encode_texts, max_wait_ms=-1)
