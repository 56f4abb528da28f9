"""Which segment row each ANN label stands for, in one snapshot.

The index a server searches is not changed while it serves: rows the store deleted
since the index was saved keep their labels in it, and are kept out of results by the
`alive` mask (a FAISS bitmap selector); rows added since have no label yet and are
ranked exactly beside the index (ranking.RowsInMemory) until the next save or merge.
"""

from __future__ import annotations

import numpy as np


class LabelMap:
    def __init__(self, label_of_row: np.ndarray, labels: int, servable: np.ndarray):
        """`label_of_row`: per snapshot row, its label or -1; `labels`: the index's label
        count; `servable`: per row, whether it may be returned."""
        self.label_of_row = label_of_row
        self.labels = labels
        held = servable & (label_of_row >= 0)
        self.row_of_label = np.full(labels, -1, np.int64)
        rows = np.flatnonzero(held)
        self.row_of_label[label_of_row[rows]] = rows
        alive = self.row_of_label >= 0
        alive.setflags(write=False)  # shared by queries: lets FAISS reuse its selector
        # None when every label serves: the index is searched without a selector.
        self.alive: np.ndarray | None = None if alive.all() else alive
        self.growing = np.flatnonzero(servable & (label_of_row < 0))

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

    def extended(self, rows: int, servable: np.ndarray) -> LabelMap:
        """The same labels over a snapshot with `rows` rows (new rows have none)."""
        label_of_row = self.label_of_row
        if rows > len(label_of_row):
            label_of_row = np.concatenate(
                [label_of_row, np.full(rows - len(label_of_row), -1, np.int64)]
            )
        return LabelMap(label_of_row, self.labels, servable)
