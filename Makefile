# Two commands on a fresh machine: `make demo` and `make test`. Everything else is optional.
VENV   ?= .venv
PY     := $(VENV)/bin/python
VAE    := $(VENV)/bin/vae
STAMP  := $(VENV)/.installed
# A copy of the shared benchmark data, when this checkout sits beside it (torchvision
# unpacks next to the .gz files, so it must never be pointed at the read-only original).
SHARED_DATA ?= ../shared/data
DATA_COPY   ?= .cache/data

.PHONY: install demo test smoke lint bench data-copy clean gpu-check gpu-check-run

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VAE) train --experiment quickstart --runs-dir demo-runs
	$(VAE) eval --runs-dir demo-runs --iw-samples 100
	$(VAE) sample --runs-dir demo-runs --n 64
	$(VAE) sample --runs-dir demo-runs --n 64 --stochastic

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

# The device check (issue 17, docs/benchmarks.md): on a CUDA machine, every GPU number in one
# run of under 9 minutes, written to $(OUT)/gpu-check.json and .md; elsewhere one line, exit 0.
# The probe runs under a bare python3 before anything is installed. The venv is reused if there
# is one; else it is made to see $(PYTHON3)'s own packages (a GPU image's torch, pip and
# setuptools, also when that python3 is itself a venv: a .pth file adds its site-packages) and
# this package is installed without build isolation, so nothing already there is downloaded:
# it works on an offline GPU machine whose python3 has torch and Lightning. Elsewhere pip fetches
# what is missing.
# On the device tool: `make gpu-check OUT=$$OUT/gpu-check` with timeout_s 600.
OUT       ?= gpu-check
PYTHON3   ?= python3
GPU_STAMP := $(VENV)/.gpu-installed

gpu-check:
	@if $(PYTHON3) scripts/gpu_check.py --probe; then $(MAKE) --no-print-directory gpu-check-run; fi

gpu-check-run: $(GPU_STAMP)
	PYTHONUNBUFFERED=1 $(PY) scripts/gpu_check.py --out $(OUT) $(GPU_CHECK_ARGS)

$(GPU_STAMP): pyproject.toml
	@if [ ! -d $(VENV) ]; then \
		$(PYTHON3) -m venv --system-site-packages --without-pip $(VENV) && \
		$(PYTHON3) -c 'import sysconfig; p = sysconfig.get_paths(); print("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dict.fromkeys((p["purelib"], p["platlib"]))))' \
			> "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_parent_site.pth"; \
	fi
	$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip -q
	$(PY) -m pip install -q --no-build-isolation -e . || $(PY) -m pip install -q -e .
	touch $@

lint: install
	$(VENV)/bin/ruff check vae_cli tests scripts
	$(VENV)/bin/ruff format --check vae_cli tests scripts

clean:
	rm -rf demo-runs runs gpu-check .pytest_cache .ruff_cache
