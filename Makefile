# hdspike: `make demo` runs the main job, `make test` runs the tests. Both create .venv.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# extra flags for every benchmark of bench-quick, e.g. BENCH_ARGS=--allow-dirty on a tree with
# uncommitted changes (benchmarks refuse to write results from one otherwise; bench/_common.py)
BENCH_ARGS ?=

.PHONY: install peers demo test test-fast test-sanitize bench bench-quick data clean

$(STAMP): pyproject.toml setup.py constraints-dev.txt $(wildcard csrc/*.c csrc/*.h csrc/*.inc csrc/*.py)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip 'setuptools>=68' wheel 'cffi>=1.16'
	# torch is pinned to the CPU wheel on this machine's disk (constraints-dev.txt);
	# --no-build-isolation builds the C extension with the venv's own cffi/setuptools.
	$(BIN)/pip install -q -c constraints-dev.txt --no-build-isolation -e '.[test]'
	$(BIN)/python -c "import hdc; print('hdc backends:', hdc.backend_info())"
	touch $(STAMP)

install: $(STAMP)

# The peers that bench/ compares with (the extra "peers": faiss-cpu, NumKong, SimSIMD, torchhd), at
# the versions pinned in constraints-dev.txt. Not part of install or test: the library never
# imports them, and a benchmark without them leaves their rows out (its JSON says which).
PEERS_STAMP := $(VENV)/.peers-stamp
$(PEERS_STAMP): $(STAMP)
	$(BIN)/pip install -q -c constraints-dev.txt --no-build-isolation -e '.[test,peers]'
	$(BIN)/python -c "import numkong, simsimd, faiss, torchhd; print('peers:', numkong.__version__, simsimd.__version__, faiss.__version__, torchhd.__version__)"
	touch $(PEERS_STAMP)

peers: $(PEERS_STAMP)

# Fetching data is an explicit step, never a dependency of test/bench: it installs a system
# package. Fashion-MNIST comes from Debian's dataset-fashion-mnist where we can apt-get (root on
# Debian); elsewhere the loader names the upstream address and the tests that need it skip.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || echo "dataset-fashion-mnist not installed"; \
	fi

demo: install
	$(BIN)/python -m hdc.demo

test: install
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -x -m "not slow" $(PYTEST_ARGS)

# The C kernels under AddressSanitizer + UBSan (a separate build in .asan/; see README).
test-sanitize: install
	PYTHON=$(BIN)/python bash csrc/run_sanitized_tests.sh

bench-quick: install peers
	for b in bench/[a-z]*.py; do $(BIN)/python $$b --quick --out bench/results/quick $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf build .asan *.egg-info hdc/_hdc_c*.so hdc/_hdc_c.c .pytest_cache
