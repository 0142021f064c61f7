# Two commands on a fresh machine (everything installs itself into .venv/ at the repo root):
#   make lab    JupyterLab with eksray-jupyter on the local backend
#   make test   lint + the whole test suite (Python, then the Galata UI tests in Chromium);
#               builds the real Kubernetes control plane for the k8s tests first (Go 1.26)

VENV    := .venv
BIN     := $(VENV)/bin
PY      := $(BIN)/python
STAMP   := $(VENV)/.eksray-installed
ROOTARG := $(if $(filter 0,$(shell id -u)),--allow-root,)
RETRY   := bash $(abspath .ci/retry)
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: lab test lint pytest ui-test install clean bench k8s-bin k8s-up prometheus

install: $(STAMP)

$(STAMP): pyproject.toml package.json yarn.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(RETRY) $(PY) -m pip install -q --upgrade pip uv
	# uv resolves ray+boto3+moto in seconds where pip backtracks for many minutes.
	# Compiled now, once: Ray starts a dozen Python processes per cluster, and without .pyc files
	# (PYTHONDONTWRITEBYTECODE, a read-only venv) each compiles Ray again at every start.
	$(RETRY) $(BIN)/uv pip install --compile-bytecode --python $(PY) -e ".[test]"
	$(BIN)/jupyter server extension list 2>&1 | grep -q "eksray_jupyter.*OK"
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab $(ROOTARG)

lint: $(STAMP)
	$(BIN)/ruff check eksray_jupyter tests benchmarks ui-tests/jupyter_server_test_config.py
	$(BIN)/ruff format --check eksray_jupyter tests benchmarks
	$(RETRY) $(BIN)/jlpm install --immutable
	$(BIN)/jlpm lint

# The real Kubernetes control plane for the k8s tests, built from the Go module proxy into
# ~/.cache/eksray-k8s/<key of the pinned versions>/ (EKSRAY_K8S_CACHE); skipped when built.
k8s-bin: $(STAMP)
	$(RETRY) $(PY) -m tests.k8s build

k8s-up: k8s-bin
	$(PY) -m tests.k8s up

# Debian's Prometheus, for the test of the Ray dashboard's metrics (tests/test_prometheus_ray.py);
# installed as root (CI), else that test is skipped.
prometheus:
	command -v prometheus >/dev/null || [ "$$(id -u)" != 0 ] || $(RETRY) sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends prometheus"

pytest: $(STAMP) k8s-bin prometheus
	$(BIN)/python -m pytest tests

ui-test: $(STAMP)
	command -v chromium >/dev/null || $(RETRY) sh -c "apt-get update -q && apt-get install -y -q chromium"
	cd ui-tests && $(RETRY) $(abspath $(BIN))/jlpm install --immutable && $(abspath $(BIN))/jlpm test

test: lint pytest ui-test

bench: $(STAMP) k8s-bin
	$(BIN)/python -m benchmarks.server_start
	$(BIN)/python -m benchmarks.create_ready
	$(BIN)/python -m benchmarks.kernel_start
	$(BIN)/python -m benchmarks.kuberay_list
	PYTHONPATH=. $(BIN)/python -m benchmarks.push_latency
	PYTHONPATH=. $(BIN)/python -m benchmarks.job_push_latency
	PYTHONPATH=. $(BIN)/python -m benchmarks.panel_load

clean:
	rm -rf $(VENV) node_modules ui-tests/node_modules lib eksray_jupyter/labextension
