"""A Hugging Face checkpoint named by a spec: a Hub id with an optional revision, or a
folder written by save_pretrained. Shared by the CLAP encoders and the LLaVA rerankers.

Specs (after the family prefix, which may also be left on):
  ORG/NAME[@REVISION]   a Hugging Face Hub model; the first run downloads it into the
                        Hugging Face cache
  local-dir:/dir        a folder as written by save_pretrained (config.json, weights,
                        processor files)
  /dir, ./dir, ~/dir    an existing folder works without the local-dir: prefix too
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from xmodal.search.errors import ModelLoadError, ModelSpecError

from ._torch_utils import looks_like_download_failure, offline_hint
from .digest import file_digest

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
_HUB_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class HfSpec:
    """A parsed spec: exactly one of hub_id, local_dir is set. Subclasses name their
    family (the spec prefix) and an example Hub id for the error messages."""

    hub_id: str | None = None
    revision: str | None = None
    local_dir: Path | None = None

    FAMILY: ClassVar[str] = ""
    EXAMPLE: ClassVar[str] = "ORG/NAME"

    @classmethod
    def parse(cls, rest: str) -> Self:
        family = cls.FAMILY
        rest = rest.strip().removeprefix(f"{family}:")
        if not rest:
            raise ModelSpecError(f"empty {family} spec; write {family}:{cls.EXAMPLE}")
        if rest.startswith("local-dir:"):
            folder = rest.removeprefix("local-dir:")
            if not folder:
                raise ModelSpecError(
                    f"'{family}:local-dir:' needs a folder: {family}:local-dir:/path"
                )
            return cls(local_dir=Path(folder).expanduser())
        path = Path(rest).expanduser()
        if rest.startswith(("/", "~", ".")) or path.is_dir():
            return cls(local_dir=path)
        name, _, revision = rest.partition("@")
        org, sep, model = name.partition("/")
        valid = (
            sep
            and org
            and model
            and "/" not in model
            and set(org) <= _HUB_NAME_CHARS
            and set(model) <= _HUB_NAME_CHARS
            and (revision or "@" not in rest)
        )
        if not valid:
            raise ModelSpecError(
                f"'{family}:{rest}' is neither a Hugging Face model id (ORG/NAME[@REVISION], "
                f"e.g. {family}:{cls.EXAMPLE}) nor an existing folder "
                f"({family}:local-dir:/path/to/model)"
            )
        return cls(hub_id=name, revision=revision or None)

    @property
    def source(self) -> str:
        """The first argument of from_pretrained."""
        if self.local_dir is not None:
            return str(self.local_dir)
        assert self.hub_id
        return self.hub_id


def weights_digest(folder: Path, what: str = "model") -> str:
    """sha256 over the weight files of a save_pretrained folder, by name and content."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise ModelLoadError(
            f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {folder}; a {what} folder is "
            "what save_pretrained writes"
        )
    digest = hashlib.sha256()
    for p in files:
        # The name goes in too so that two shards swapping content is a different model;
        # each file's own digest is cached (search/encoders/digest.py).
        digest.update(p.name.encode() + b"\0" + file_digest(p).encode())
    return digest.hexdigest()


class HfCheckpoint:
    """Identity, config and loading of one parsed spec, never touching the network
    except in `from_pretrained`; `what` names the model kind in messages ("CLAP")."""

    def __init__(self, parsed: HfSpec, spec: str, what: str):
        self.parsed = parsed
        self.spec = spec
        self.what = what
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        """By content for a folder (a moved or copied folder is still the same model),
        by id and revision for a Hub model."""
        if self._identity is None:
            p = self.parsed
            if p.local_dir is not None:
                self.check_local_dir()
                digest = weights_digest(p.local_dir, self.what)
                self._identity = f"{type(p).FAMILY}:sha256:{digest[:16]}"
            else:
                self._identity = f"hf:{p.hub_id}@{p.revision or 'main'}"
        return self._identity

    def check_local_dir(self) -> None:
        folder = self.parsed.local_dir
        if folder is None:
            return
        if not folder.is_dir():
            raise ModelLoadError(f"{self.what} model folder not found: {folder}")
        if not (folder / "config.json").is_file():
            raise ModelLoadError(
                f"{folder} has no config.json; a {self.what} folder is what the model's and "
                "the processor's save_pretrained write"
            )

    def cheap_config(self) -> dict[str, Any] | None:
        """config.json from the folder or the hub cache, without touching the network."""
        p = self.parsed
        if p.local_dir is not None:
            self.check_local_dir()
            path: Path | None = p.local_dir / "config.json"
        else:
            from huggingface_hub import try_to_load_from_cache

            assert p.hub_id
            found = try_to_load_from_cache(p.hub_id, "config.json", revision=p.revision)
            path = Path(found) if isinstance(found, str) else None
        if path is None:
            return None
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return config if isinstance(config, dict) else None

    def offline_hint(self) -> str:
        family = type(self.parsed).FAMILY
        return offline_hint(
            f"The {self.what} model {self.spec} is not in the local Hugging Face cache",
            [
                f"a model folder written by save_pretrained ({family}:local-dir:/path/to/model)",
                "a Hugging Face cache that already holds it (set HF_HOME to it)",
            ],
            reachable="is the network reachable, or is HF_HUB_OFFLINE set",
            note="A first run downloads it once.",
        )

    def from_pretrained(self, cls: Any, **kwargs: Any) -> Any:
        """`cls.from_pretrained` for this checkpoint; ModelLoadError with the offline hint
        when a Hub model is neither cached nor reachable."""
        p = self.parsed
        self.check_local_dir()
        try:
            return cls.from_pretrained(p.source, revision=p.revision, **kwargs)
        except (ModelSpecError, ModelLoadError):
            raise
        except Exception as error:  # OSError, ValueError, huggingface_hub errors
            message = str(error)
            # transformers words a missing download as "can't load ... make sure ... is
            # the correct path", so the cache is asked as well as the message read.
            if p.hub_id is not None and (
                looks_like_download_failure(f"{type(error).__name__} {message}")
                or self.cheap_config() is None
            ):
                raise ModelLoadError(f"{self.offline_hint()} Cause: {message[:300]}") from error
            raise ModelLoadError(f"could not load {self.spec}: {message[:500]}") from error


def transformers_module(extra: str, what: str) -> Any:
    """transformers, imported on first use; a clear error naming the extra without it."""
    try:
        import transformers
    except ImportError as error:
        raise ModelLoadError(
            f"{what} models need transformers: pip install 'xmodal[{extra}]'"
        ) from error
    # Its per-load progress bars would interleave with xmodal's own output.
    transformers.utils.logging.disable_progress_bar()
    return transformers
