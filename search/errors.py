"""Typed errors raised by the library.

The CLI turns them into one-line messages and exit codes, the API into 4xx
responses; library code never prints or exits.
"""


class XmodalError(Exception):
    """Base class of every error xmodal raises on purpose."""


class ModelSpecError(XmodalError, ValueError):
    """A model spec string that names no encoder, or names one ambiguously."""


class ModelLoadError(XmodalError):
    """Model weights could not be loaded; the run stops rather than use random weights."""


class ModelMismatchError(XmodalError):
    """A store's space was built with another model than the one asked for."""


class StoreError(XmodalError):
    """The data directory cannot be opened or is in a state xmodal cannot use."""


class UnknownItemError(XmodalError, KeyError):
    """No media item with that id exists in the store."""

    def __init__(self, item_id: str):
        super().__init__(item_id)
        self.item_id = item_id

    def __str__(self) -> str:
        # Quoted whole up to a length ids have; a longer one was sent to be echoed.
        shown = self.item_id if len(self.item_id) <= 200 else f"{self.item_id[:200]}..."
        return f"no item with id {shown!r}"


class OriginalMissing(XmodalError):
    """An indexed item whose file is gone."""


class InvalidQueryError(XmodalError, ValueError):
    """A query that cannot be answered as asked (no query, bad filter, bad k)."""


class MediaDecodeError(XmodalError):
    """A file or upload that is not a readable image (or other media) within the limits."""


class MediaTooLarge(MediaDecodeError):
    """Media over a size or pixel limit, refused before it is decoded."""


class SourceError(XmodalError):
    """A path given to index does not exist or cannot be read."""


class IndexingAborted(XmodalError):
    """A run stopped at a failed file because failures were made fatal (--fail-fast)."""


class WriterBusyError(StoreError):
    """Another process is writing to the data directory and did not finish in time."""


class StoreDamagedError(StoreError):
    """A table of the store cannot be read: `xmodal repair` restores its last good version."""

    def __init__(self, message: str, table: str):
        super().__init__(message)
        self.table = table


class MigrationError(XmodalError):
    """A model migration the store's state does not allow: to the model the space already
    has, a rollback with nothing to roll back to, one while another runs."""
