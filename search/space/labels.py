"""Which segment row each ANN label stands for, in one snapshot.

The index a server searches is not changed while it serves: rows the store deleted
since the index was saved keep their labels in it, and are kept out of results by the
`alive` mask (a FAISS bitmap selector); rows added since have no label yet and are
ranked exactly beside the index (ranking.RowsInMemory) until the next save or merge.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from .snapshot import Appendable

if TYPE_CHECKING:
    from .snapshot import Snapshot


class LabelMap:
    def __init__(self, label_of_row: np.ndarray, labels: int, servable: np.ndarray):
        """`label_of_row`: per snapshot row, its label or -1; `labels`: the index's label
        count; `servable`: per row, whether it may be returned."""
        self._column = Appendable(label_of_row)
        self.label_of_row = label_of_row
        self.labels = labels
        self._index(servable)
        self.unlabelled = np.flatnonzero(label_of_row < 0)
        self.growing = self.unlabelled[servable[self.unlabelled]]

    def _index(self, servable: np.ndarray) -> None:
        """Rows by label and the labels that serve, from every row (O(rows))."""
        held = servable & (self.label_of_row >= 0)
        self.row_of_label = np.full(self.labels, -1, np.int64)
        rows = np.flatnonzero(held)
        self.row_of_label[self.label_of_row[rows]] = rows
        alive = self.row_of_label >= 0
        alive.setflags(write=False)  # shared by queries: lets FAISS reuse its selector
        # None when every label serves: the index is searched without a selector.
        self.alive: np.ndarray | None = None if alive.all() else alive

    @property
    def held(self) -> int:
        """Rows the index answers for."""
        return self.labels if self.alive is None else int(self.alive.sum())

    @property
    def dead(self) -> int:
        """Labels of rows the store no longer has."""
        return self.labels - self.held

    def rows(self, labels: np.ndarray) -> np.ndarray:
        """Rows of labels; -1 for labels with no servable row."""
        inside = (labels >= 0) & (labels < len(self.row_of_label))
        rows = np.full(len(labels), -1, np.int64)
        rows[inside] = self.row_of_label[labels[inside]]
        return rows

    def extended(self, snapshot: Snapshot) -> LabelMap:
        """The same labels over the next snapshot of the chain: its new rows have none,
        and unless a labelled row came to serve or stopped (`snapshot.flipped`), rows by
        label are those of this one; only the rows without a label are looked at."""
        before = len(self.label_of_row)
        new = copy.copy(self)
        if snapshot.rows > before:
            new._column = self._column.appended(np.full(snapshot.rows - before, -1, np.int64))
            new.label_of_row = new._column.values
            new.unlabelled = np.concatenate([self.unlabelled, np.arange(before, snapshot.rows)])
        flipped = snapshot.flipped
        if len(flipped) and (self.label_of_row[flipped[flipped < before]] >= 0).any():
            new._index(snapshot.servable)
        new.growing = new.unlabelled[snapshot.servable[new.unlabelled]]
        return new
