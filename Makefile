# Two entry points, each self-contained on a fresh machine:
#   make demo  - build a venv, generate a demo library, index it offline, serve it
#   make test  - build a venv with the test tools, lint, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# PyTorch is installed first and pinned, so that resolving the rest never pulls
# another (multi-GB) build. Override for your platform, e.g. a CPU wheel index.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DATA ?= demo-data
# The browser tests (tests/web) drive Debian's Chromium and check with axe-core.
CHROMIUM ?= /usr/bin/chromium
AXE_VERSION ?= 4.10.3
AXE := build/axe/axe.min.js
SUDO := $(shell [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null && echo sudo)
HOST ?= 127.0.0.1
PORT ?= 8765

.PHONY: demo test lint format install clean bench docs browser reference-model eval-reference \
	reference-audio-model eval-reference-audio reference-vlm-model

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[dev,video,audio,rerank]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/xmodal demo --data $(DEMO_DATA) --host $(HOST) --port $(PORT)

SOURCES := xmodal search indexer api web training tests bench tools setup.py

# mypy and import-linter read the package tree (tools/package_tree.py): the layer
# folders as installed under `xmodal`.
lint: install
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)
	$(PY) tools/package_tree.py > /dev/null
	cd build/package-tree && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml
	cd build/package-tree && ../../$(VENV)/bin/lint-imports --no-cache ../../pyproject.toml
	$(PY) -m xmodal.api.settings_doc --check

# docs/settings.md, generated from the settings classes (lint checks it is current).
docs: install
	$(PY) -m xmodal.api.settings_doc

format: install
	$(VENV)/bin/ruff format $(SOURCES)
	$(VENV)/bin/ruff check --fix $(SOURCES)

# Debian's Chromium (never a browser downloaded by Playwright), installed when missing.
browser:
	@command -v chromium >/dev/null || [ -x $(CHROMIUM) ] || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

# axe-core, the accessibility checker the page's tests run, at a pinned version from npm.
$(AXE):
	mkdir -p build/axe
	cd build/axe && npm pack --silent axe-core@$(AXE_VERSION) && \
		tar -xzf axe-core-$(AXE_VERSION).tgz package/axe.min.js && \
		mv package/axe.min.js axe.min.js && rmdir package

test: lint browser $(AXE)
	CHROMIUM_PATH=$$(command -v chromium || echo $(CHROMIUM)) $(PY) -m pytest -q

bench: install
	$(PY) bench/index_throughput.py

# Retrain the committed reference model (CPU, about 15 minutes) and write its card.
reference-model: install
	$(PY) -m training.train_reference --out search/models/xmodal-ref.pt

# Retrain the committed reference reranker, a small LLaVA-architecture model (CPU, under
# 15 minutes), and write its card with its held-out figures.
reference-vlm-model: install
	$(PY) -m training.train_vlm_reference --minutes 12.5 --vision-share 0.4 --out search/models/xmodal-ref-vlm

# The reference model's figures through the real pipeline, on held-out generated sets.
eval-reference: install
	$(PY) -m training.make_dataset bench-data/eval-seen --split seen --count 500
	$(PY) -m training.make_dataset bench-data/eval-unseen --split unseen --count 500
	$(VENV)/bin/xmodal eval bench-data/eval-seen --model xmodal-ref
	$(VENV)/bin/xmodal eval bench-data/eval-unseen --model xmodal-ref

# Retrain the committed reference audio model (CPU, about 17 minutes) and write its card.
reference-audio-model: install
	$(PY) -m training.train_audio_reference --out search/models/xmodal-ref-audio

# Its figures through the real pipeline: 48 kHz WAVs, decoded and resampled by the indexer.
eval-reference-audio: install
	$(PY) -m xmodal.synthetic.sounds bench-data/sounds-seen --split seen --count 500
	$(PY) -m xmodal.synthetic.sounds bench-data/sounds-unseen --split unseen --count 500
	$(VENV)/bin/xmodal eval bench-data/sounds-seen --model xmodal-ref-audio
	$(VENV)/bin/xmodal eval bench-data/sounds-unseen --model xmodal-ref-audio

clean:
	rm -rf $(VENV) $(DEMO_DATA) .pytest_cache .ruff_cache
