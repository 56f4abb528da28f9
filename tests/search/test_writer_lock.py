"""The data directory's writer lock: one holder at a time, re-entrant for its holder,
a message that names who holds it."""

from __future__ import annotations

import os
import threading
import time

import pytest

from xmodal.search import Store
from xmodal.search.errors import WriterBusyError
from xmodal.search.store import ItemRecord
from xmodal.search.store.writer_lock import HOLDER_FILE, WriterLock


def test_a_second_holder_gives_up_or_waits_and_hears_who_holds_it(tmp_path):
    first, second = WriterLock(tmp_path), WriterLock(tmp_path)
    with first.holding():
        holder = second.holder()
        assert holder is not None and holder.pid == os.getpid()
        with pytest.raises(WriterBusyError, match=rf"pid {os.getpid()} .*gave up"):
            second.acquire(wait=0)
        heard = []
        with pytest.raises(WriterBusyError, match=r"after waiting 0\.2 s"):
            second.acquire(wait=0.2, on_wait=heard.append)
        assert [h.pid for h in heard] == [os.getpid()]  # told once, before waiting

        def release_soon() -> None:
            time.sleep(0.3)
            first.release()

        first.acquire()  # depth 2: released once by the thread, once by the block
        threading.Thread(target=release_soon).start()
        with pytest.raises(WriterBusyError):
            second.acquire(wait=0.1)
    with second.holding(wait=5):
        assert second.held and second.holder().pid == os.getpid()
    assert not (tmp_path / HOLDER_FILE).exists()


def test_store_writes_take_the_shared_lock_and_are_refused_while_another_holds_it(tmp_path):
    store = Store(tmp_path / "data", writer_wait=0)
    assert store.writer is WriterLock.shared(tmp_path / "data")
    record = ItemRecord(id="a", uri="/x/a.jpg", kind="image", root="/x", status="failed")
    with WriterLock(tmp_path / "data").holding():  # stands for another process
        with pytest.raises(WriterBusyError):
            store.upsert_items([record])
        assert store.count_items(None) == 0  # reads never wait
    # Re-entrant, and from the writer thread of a run too.
    with store.writing(), store.writing():
        worker = threading.Thread(target=store.upsert_items, args=([record],))
        worker.start()
        worker.join()
    assert store.count_items(None) == 1
