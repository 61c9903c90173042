# sixview: `make demo` and `make test` create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
IMAGES ?=
DEMO_OUT ?= demo_out

.PHONY: demo test lint models bench quantize gate clean

# Runtime only (no TensorFlow): what a user of the shipped models needs.
$(VENV)/.runtime: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -e '.[cpu,demo]'
	touch $@

# Everything: training, conversion, tracking, tests.
$(VENV)/.dev: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -e '.[cpu,train,track,demo,dev,serve]'
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(PY) -m edge.demo --images "$(IMAGES)" --out $(DEMO_OUT)

test: $(VENV)/.dev
	$(PY) -m pytest -q

# The shipped models, end to end on ../shared/data (hours on a CPU; every stage resumes):
# every backbone recipe in runs/<recipe>/, then SHIP's models copied into models/, their INT8 IRs made and gated.
SHIP ?= $(shell $(PY) -c 'from training.release.make_models import DEFAULT_SHIP; print(DEFAULT_SHIP)')
models: $(VENV)/.dev
	$(PY) -m training.release.make_models --ship $(SHIP)
	$(MAKE) quantize gate

# Latency, pipeline, memory, serving, Ray-scan and reference-path benchmarks on the shipped models -> benchmarks/results/<machine>/
# The reference-path comparison needs the Keras checkpoint the HD model came from, and the
# backbone comparison the runs of every recipe (both from make models).
BENCH_KERAS ?= runs/$(SHIP)/hd/best.keras
BACKBONES := $(foreach r,$(sort convnext-edge efficientnet-lite0 efficientnet-lite0-hd192 efficientnet-lite2-hd192 $(SHIP)),$(if $(wildcard runs/$(r)/calibrated/hd.onnx),--recipe $(r)=runs/$(r)/calibrated))
bench: $(VENV)/.dev
	$(PY) -m benchmarks.latency
	$(PY) -m benchmarks.pipeline
	$(PY) -m benchmarks.cold_start
	$(PY) -m benchmarks.memory
	$(PY) -m benchmarks.serve
	$(PY) -m benchmarks.ray_scan
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

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check edge convert training benchmarks tests docker

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
