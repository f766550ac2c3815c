# napari-seglab: one command per job. Each target creates .venv and installs what it needs.
#   make demo    run the demo (napari window with a display; headless screenshots + report without)
#   make test    run the whole test suite (widget tests on a virtual screen when there is no display)
#   make lint    ruff check + ruff format --check + npe2 validate
#   make docs    build the documentation (strict: warnings fail)
#   make bench   run the benchmarks and print ours / reference / ratio

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.seglab-installed

# Widgets need a screen: use the real one if there is one, else Xvfb.
ifeq ($(strip $(DISPLAY)$(WAYLAND_DISPLAY)),)
  XRUN := xvfb-run -a -s "-screen 0 1600x1000x24"
else
  XRUN :=
endif

.PHONY: all install demo test lint format docs bench clean

all: test

$(STAMP): pyproject.toml
	./scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=23.2" >/dev/null
	$(BIN)/python -m pip install -e ".[test,docs,dev,mask2former]"
	# SAM 2 (the [sam2] extra) is an sdist: build it against the torch above, without its
	# CUDA extension (see docs/sam.md); build isolation would pull another torch.
	$(BIN)/python -m pip install "setuptools>=70.1" wheel
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install --no-build-isolation "sam2==1.1.0"
	$(BIN)/python -m pip install -e ".[sam2]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(XRUN) $(BIN)/python -m napari_seglab._widgets.demo $(if $(XRUN),--headless,) --out demo-output

test: $(STAMP)
	$(XRUN) $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/npe2 validate napari-seglab --imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(XRUN) $(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) site demo-output bench-output .pytest_cache .ruff_cache
