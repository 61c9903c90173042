# sixview: `make demo`, `make test`, `make test-fast` and `make wheel` create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
IMAGES ?=
DEMO_OUT ?= demo_out

.PHONY: demo test test-fast test-unit test-integration test-system wheel lint models bench quantize gate clean \
	docker docker-down

# Runtime only (no TensorFlow): what a user of the shipped models needs.
$(VENV)/.runtime: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -e '.[cpu,demo]'
	touch $@

# Everything: training, conversion, tracking, tests.
$(VENV)/.dev: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -e '.[cpu,train,track,demo,dev,serve]'
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(PY) -m edge.demo --images "$(IMAGES)" --out $(DEMO_OUT)

# The tests in three tiers (markers set by tests/conftest.py: TIERS):
#   unit         in-process and fast (no subprocess, network, server or training): `make test-fast`, in parallel
#   integration  real servers, the shipped models, Ray, the CLI as a subprocess: one at a time (ports, Ray)
#   system       the browser, the camera window under Xvfb, podman images, training, the installed wheel
# `make test` runs all three, each even when an earlier one failed, and fails when any did. pytest's exit 5
# (no test selected) is a failure too: a tier that selects nothing has lost its marker.
PYTEST := $(PY) -m pytest -q --durations=10
XDIST ?= -n auto
define tier
	@echo "== the $(1) tier: $(PYTEST) -m $(1) $(2)"
	@$(PYTEST) -m $(1) $(2) || { rc=$$?; [ $$rc != 5 ] || echo "make: the $(1) tier selected no test (pytest exit 5)"; \
		echo "make: the $(1) tier failed (pytest exit $$rc)"; exit $$rc; }
endef

test-fast test-unit: $(VENV)/.dev
	$(call tier,unit,$(XDIST))

test-integration: $(VENV)/.dev
	$(call tier,integration)

test-system: $(VENV)/.dev
	$(call tier,system)

test: $(VENV)/.dev
	$(MAKE) --no-print-directory -k test-unit test-integration test-system

# The wheel (models included: sixview/models/) and the sdist, in dist/
wheel: $(VENV)/.dev
	$(PY) -m build --outdir dist .

# The shipped models, end to end on ../shared/data (hours on a CPU; every stage resumes):
# every backbone recipe in runs/<recipe>/, then SHIP's models copied into models/, their INT8 IRs made and gated.
SHIP ?= $(shell $(PY) -c 'from training.release.make_models import DEFAULT_SHIP; print(DEFAULT_SHIP)')
models: $(VENV)/.dev
	$(PY) -m training.release.make_models --ship $(SHIP)
	$(MAKE) quantize gate

# Latency (and per CPU class), pipeline, memory, serving, Ray-scan and reference-path benchmarks on the shipped models -> benchmarks/results/<machine>/;
# the one-pass graph of the shipped HD (convert.onepass; INT8 quantized here) against it, frame for frame
# The reference-path comparison needs the Keras checkpoint the HD model came from, and the
# backbone comparison the runs of every recipe (both from make models).
BENCH_KERAS ?= runs/$(SHIP)/hd/best.keras
BACKBONES := $(foreach r,$(sort convnext-edge efficientnet-lite0 efficientnet-lite0-hd192 efficientnet-lite2-hd192 $(SHIP)),$(if $(wildcard runs/$(r)/calibrated/hd.onnx),--recipe $(r)=runs/$(r)/calibrated))
bench: $(VENV)/.dev
	$(PY) -m benchmarks.latency
	$(PY) -m benchmarks.cpu_classes
	$(PY) -m benchmarks.pipeline
	$(PY) -m benchmarks.cold_start
	$(PY) -m benchmarks.memory
	$(PY) -m benchmarks.serve
	$(PY) -m benchmarks.ray_scan
	$(PY) -m convert.onepass models --out runs/bench-onepass
	$(PY) -m convert.int8_ov --models runs/bench-onepass --roles hd --limit 300
	$(PY) -m benchmarks.one_pass --before models --after runs/bench-onepass --caps native,AVX2
	$(if $(wildcard $(BENCH_KERAS)),$(PY) -m benchmarks.reference --keras $(BENCH_KERAS) --onnx models/hd.onnx,\
	@echo "bench: reference path skipped: no $(BENCH_KERAS) (run make models, or BENCH_KERAS=path.keras)")
	$(if $(BACKBONES),$(PY) -m benchmarks.backbones $(BACKBONES),@echo "bench: backbones skipped: no runs/<backbone>/calibrated (run make models)")

# The OpenVINO INT8 IRs of the shipped models (NNCF; models/<role>.int8-ov.xml/.bin), each calibrated on what it
# serves (HD: photos; Standard: CIFAR-10 training thumbnails), off the gate's sets
quantize: $(VENV)/.dev
	$(PY) -m convert.int8_ov --models models --limit 300

# The BF16 and INT8 accuracy gates of the shipped models (writes models/<role>.gates.json, read by --precision auto),
# each on a set of what it serves that chose nothing: HD on voc07_val, Standard on 2,000 CIFAR-10 test images
gate: $(VENV)/.dev
	$(PY) -m benchmarks.precision_gate --models models --roles hd --data ../shared/data/voc07_val --precisions bf16,int8
	$(PY) -m benchmarks.precision_gate --models models --roles standard --data ../shared/data/cifar10-jpg.tar.gz \
		--limit 2000 --precisions bf16,int8

# sixview serve from compose.yaml on Docker or podman (no daemon, systemd or registry needed), waited on until
# its health check passes; docker-down stops it (docs/docker.md, docker/up.sh)
docker:
	docker/up.sh up

docker-down:
	docker/up.sh down

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check edge convert training benchmarks tests docker sixview setup.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache build dist
