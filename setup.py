"""One installed package, `xmodal`, from one folder per layer.

The repository shows the layers as top-level folders (search/, indexer/, api/, web/);
installed, they are `xmodal.search`, `xmodal.indexer`, `xmodal.api` and `xmodal.web`,
beside `xmodal` itself (xmodal/: the public surface and the generated demo media).
Nothing else is installed: not the trainers (training/), not the benchmarks (bench/).
Everything else about the distribution is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

LAYERS = ("search", "indexer", "api", "web")

packages = find_namespace_packages(include=["xmodal", "xmodal.*"], exclude=["*__pycache__"])
package_dir = {"xmodal": "xmodal"}
for layer in LAYERS:
    package_dir[f"xmodal.{layer}"] = layer
    packages += [
        f"xmodal.{name}"
        for name in find_namespace_packages(include=[layer, f"{layer}.*"], exclude=["*__pycache__"])
    ]

# Data folders are packages too (namespace ones), so that their files are installed.
package_data = {
    "xmodal.search.model_configs": ["*.json"],
    "xmodal.search.models": ["*.pt", "*.card.json", "xmodal-ref-audio/*", "xmodal-ref-vlm/*"],
    "xmodal.web.static": ["*"],  # the search page and widget.js, served as they are
}

setup(packages=packages, package_dir=package_dir, package_data=package_data)
