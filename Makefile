# daetalker: the user's entry points. `make demo` and `make test` set everything up.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
DEMO_DIR ?= demo-out
PYTEST_ARGS ?=
# pytest-xdist workers for make test (0: one process). Whole files go to a worker, so module fixtures
# (a preprocessed speaker) are built once; two fill the CI machine's two cores.
TEST_WORKERS ?= 2

export GX_ANALYTICS_ENABLED := false
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false

.PHONY: setup system-deps demo demo-containers image test bench lint compile ui clean help

help:
	@echo "make demo   - set up, then run the whole pipeline locally on a synthetic speaker"
	@echo "make test   - set up, then run the test suite"
	@echo "make setup  - virtualenv, pinned dependencies, ffmpeg/espeak-ng, model assets"
	@echo "make bench  - print the benchmark figures (bench/)"
	@echo "make ui     - start the local MLflow UI and print its URL"
	@echo "make image  - build the CPU image of components/Dockerfile with podman (no registry needed)"
	@echo "make demo-containers - make demo with every pipeline step in that image"

# Debian packages the media stages need (ffmpeg for decode/mux, espeak-ng for speech).
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	ldconfig -p | grep -q libespeak-ng.so || missing="$$missing libespeak-ng1"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PY) >/dev/null || { echo "need $(PY) (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c requirements.lock -e '.[test]'
	touch $(STAMP)

setup: system-deps $(STAMP)
	$(BIN)/daetalker assets --fetch >/dev/null
	@echo "setup done: $(BIN)/daetalker"

demo: setup
	$(BIN)/daetalker pipeline run --out $(DEMO_DIR) --profile tiny --minutes 3
	$(BIN)/daetalker registry history synthetic

# The CPU image the components name, built with podman from a debootstrapped base
# (components/image/build.sh: podman, runc and debootstrap are installed when missing).
IMAGE ?= $(or $(DAETALKER_IMAGE),ghcr.io/daetalker/daetalker:0.1.0-cpu)
image:
	IMAGE=$(IMAGE) bash components/image/build.sh

demo-containers: setup image
	$(BIN)/daetalker pipeline run --containers --out $(DEMO_DIR)-containers --profile tiny --minutes 3
	$(BIN)/daetalker registry history synthetic

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# speed benchmarks; the *_acceptance.py scripts need a trained model or dataset (see their --help)
BENCHES := synth preprocess train_dae generate evaluate
bench: setup
	for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; done

ui: setup
	$(BIN)/daetalker mlflow up

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
