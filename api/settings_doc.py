"""docs/settings.md, generated from the settings classes so that it cannot drift.

    python -m xmodal.api.settings_doc            # writes docs/settings.md
    python -m xmodal.api.settings_doc --check    # exits 1 when the file differs (make lint)

Every field of `Settings` and of each group nested in it (recursively) becomes a row:
its key, type, default, constraints, environment variable, TOML key and description,
all read from the pydantic fields, so that a new or changed setting reaches the page
the next time `make docs` runs, and `make lint` fails until it has.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from xmodal.api.settings import CONFIG_NAME, Settings
from xmodal.search.settings import SettingsGroup

DEFAULT_PATH = Path("docs") / "settings.md"
ENV_PREFIX = "XMODAL_"

# A valid xmodal.toml (tests/api/test_settings_doc.py loads it): one of each kind of
# key, a root key, a group's table and a nested group's table.
EXAMPLE_TOML = """\
data = "~/xmodal-data"
device = "cpu"

[server]
host = "0.0.0.0"
port = 8080

[query]
min_score = 3.0

[ann]
kind = "hnsw"
ef_search = 128

[indexing]
batch_size = 64

[video]
sound = false

[video.keyframes]
max_gap = 10.0
"""


@dataclass(frozen=True)
class Section:
    """One table of the page: the root keys, or a group's (dotted path `parts`)."""

    parts: tuple[str, ...]
    doc: str
    fields: list[tuple[str, FieldInfo]]


def sections(
    model: type[Any] = Settings, parts: tuple[str, ...] = (), doc: str = ""
) -> Iterator[Section]:
    """The root section, then each group in declaration order, nested groups after their
    parent's table."""
    leaves: list[tuple[str, FieldInfo]] = []
    groups: list[tuple[str, type[SettingsGroup]]] = []
    for name, field in model.model_fields.items():
        inner = field.annotation
        if isinstance(inner, type) and issubclass(inner, SettingsGroup):
            groups.append((name, inner))
        else:
            leaves.append((name, field))
    yield Section(parts, doc, leaves)
    for name, group in groups:
        yield from sections(group, (*parts, name), _first_paragraph(group.__doc__))


def _first_paragraph(doc: str | None) -> str:
    text = (doc or "").strip().split("\n\n")[0]
    return " ".join(text.split())


def env_name(parts: tuple[str, ...], name: str) -> str:
    return ENV_PREFIX + "__".join(part.upper() for part in (*parts, name))


def toml_key(parts: tuple[str, ...], name: str) -> str:
    return f"[{'.'.join(parts)}] {name}" if parts else name


def type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f'"{value}"' for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        named = " or ".join(type_name(arg) for arg in args)
        return f"{named} (optional)" if len(args) < len(get_args(annotation)) else named
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined:
        return "(computed)" if field.default_factory is not None else "(required)"
    return toml_value(field.default)


def toml_value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    return f"`{value}`"


def constraints_text(field: FieldInfo) -> str:
    symbols = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "multiple_of": "multiple of"}
    found = []
    for item in field.metadata:
        for attribute, symbol in symbols.items():
            bound = getattr(item, attribute, None)
            if bound is not None and isinstance(item, annotated_types.BaseMetadata):
                found.append(f"{symbol} {bound}")
    return ", ".join(found)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(section: Section) -> list[str]:
    lines = [
        "| key | type | default | constraints | environment | TOML | description |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, field in section.fields:
        cells = [
            f"`{'.'.join((*section.parts, name))}`",
            type_name(field.annotation),
            default_text(field),
            constraints_text(field),
            f"`{env_name(section.parts, name)}`",
            f"`{toml_key(section.parts, name)}`",
            field.description or "",
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return lines


INTRO = f"""\
# Settings

<!-- Generated from the settings classes by `python -m xmodal.api.settings_doc`
     (`make docs`); edit the classes' descriptions, not this file. `make lint` fails
     when the two differ. -->

Every entry point (the `xmodal` command line, the HTTP server, `xmodal.api.Settings`
in Python) reads the same settings: a few keys at the root and the rest in named
groups, each declared next to the code that uses it.

## Where values come from

Highest priority first:

1. **Arguments**: command-line options (`--data`, `--model`, `--port`, `--batch-size`,
   ...) and keyword arguments to `Settings(...)` or `load_settings(...)`
   (`load_settings(ann={{"ef_search": 128}})`).
2. **Environment variables**: `XMODAL_` and the key in capitals; a group's key is
   `GROUP__KEY`, with a double underscore, and a nested group's
   `GROUP__SUBGROUP__KEY`: `XMODAL_DATA`, `XMODAL_ANN__EF_SEARCH=128`,
   `XMODAL_VIDEO__KEYFRAMES__MAX_GAP=10`.
3. **A TOML file**: root keys at the top, each group a table (`[ann]`), a nested group
   a dotted table (`[video.keyframes]`). The file is the first of:
   - the file `XMODAL_CONFIG` names (an error if it does not exist);
   - `./{CONFIG_NAME}` in the current directory;
   - `{CONFIG_NAME}` in the platform's configuration folder: `~/.config/xmodal/`
     on Linux (`$XDG_CONFIG_HOME/xmodal/` when set), `~/Library/Application
     Support/xmodal/` on macOS, `%LOCALAPPDATA%\\xmodal\\` on Windows.
4. **The defaults** below.

A key that is not a setting, in the TOML file or as an `XMODAL_*` variable, is an
error that names it, as is a value outside its constraints: nothing is silently
ignored. Settings are read once, when the command or the server starts.

## Example `{CONFIG_NAME}`

```toml
{EXAMPLE_TOML.rstrip()}
```

The same from the environment: `XMODAL_DATA=~/xmodal-data XMODAL_ANN__KIND=hnsw
XMODAL_VIDEO__KEYFRAMES__MAX_GAP=10 xmodal serve`.
"""


def render() -> str:
    """The whole of docs/settings.md."""
    all_sections = list(sections())
    lines = [INTRO, "## Groups", ""]
    for section in all_sections:
        if section.parts:
            key = ".".join(section.parts)
            lines.append(f"- [`{key}`](#{key.replace('.', '')}): {section.doc}")
    for section in all_sections:
        lines.append("")
        if section.parts:
            lines.append(f"## {'.'.join(section.parts)}")
            lines.append("")
            lines.append(section.doc)
        else:
            lines.append("## Root keys")
        lines.append("")
        lines.extend(table(section))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xmodal.api.settings_doc",
        description="Write docs/settings.md from the settings classes, or check it.",
    )
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument(
        "--check", action="store_true", help="Exit 1 if the file differs; write nothing."
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.is_file() else None
        if current != text:
            state = "is missing" if current is None else "differs from the settings classes"
            print(
                f"{args.path} {state}: run `make docs` "
                "(python -m xmodal.api.settings_doc) and commit it.",
                file=sys.stderr,
            )
            return 1
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
