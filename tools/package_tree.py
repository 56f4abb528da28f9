"""Mirror the installed `xmodal` package as a tree of links, for the tools that read
packages from disk instead of importing them (mypy, import-linter).

setup.py installs the layer folders under one package (`search/` is `xmodal.search`);
an editable install resolves that with an import hook, which static tools do not see.
This writes build/package-tree/xmodal/... with one symbolic link per source file, so
that they see exactly the installed layout while reading the files you edit.

    python tools/package_tree.py          # prints the tree's root, for MYPYPATH / PYTHONPATH
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TREE = REPO / "build" / "package-tree"
# Installed name -> folder; the same mapping as setup.py's.
FOLDERS = {
    "xmodal": "xmodal",
    "xmodal/search": "search",
    "xmodal/indexer": "indexer",
    "xmodal/api": "api",
    "xmodal/web": "web",
}


def build() -> Path:
    shutil.rmtree(TREE, ignore_errors=True)
    for installed, folder in FOLDERS.items():
        source = REPO / folder
        for path in source.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            link = TREE / installed / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return TREE


if __name__ == "__main__":
    print(build())
    sys.exit(0)
