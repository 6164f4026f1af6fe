# Two commands on a fresh machine: `make demo` and `make test`. Everything else is optional.
VENV   ?= .venv
PY     := $(VENV)/bin/python
VAE    := $(VENV)/bin/vae
STAMP  := $(VENV)/.installed
# A copy of the shared benchmark data, when this checkout sits beside it (torchvision
# unpacks next to the .gz files, so it must never be pointed at the read-only original).
SHARED_DATA ?= ../shared/data
DATA_COPY   ?= .cache/data

.PHONY: install demo test smoke lint bench data-copy clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VAE) train --experiment quickstart --runs-dir demo-runs
	$(VAE) eval --runs-dir demo-runs --iw-samples 100
	$(VAE) sample --runs-dir demo-runs --n 64 --out demo-runs/samples-mean.png
	$(VAE) sample --runs-dir demo-runs --n 64 --stochastic --out demo-runs/samples-stochastic.png

test: install
	$(PY) -m pytest -q

data-copy:
	@if [ -d $(SHARED_DATA) ] && [ ! -d $(DATA_COPY) ]; then mkdir -p $(DATA_COPY) && cp -r $(SHARED_DATA)/. $(DATA_COPY)/ && chmod -R u+w $(DATA_COPY); fi

smoke: install data-copy
	$(PY) scripts/smoke.py --data-dir $(DATA_COPY)

# Throughput of `vae train` against a hand-written loop and plain Lightning, and of IW eval;
# writes docs/benchmarks.md. Not part of `make test`: ~5-10 minutes on 2 CPU cores.
bench: install data-copy
	$(PY) scripts/bench.py $$([ -d $(DATA_COPY)/MNIST ] && echo --data-dir $(DATA_COPY)) $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check vae_cli tests scripts
	$(VENV)/bin/ruff format --check vae_cli tests scripts

clean:
	rm -rf demo-runs runs .pytest_cache .ruff_cache
