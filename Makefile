# Two commands, each doing its own set-up (venv, and for the tests the system packages):  make demo   |   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
EXTRAS ?= tflite,coreml,tensorrt-onnx,openvino,executorch,dev
SHARED := $(abspath ../shared)
export FACEKD_HOME ?= $(if $(wildcard $(SHARED)/README.md),$(SHARED),)

.PHONY: setup demo test test-python test-android test-slow web-deps

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned in the same command as everything else: an unpinned torch pulls a CUDA build
	$(PY) -m pip install -q "torch==2.13.0" -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/facekd demo

test: setup
	bash scripts/system-deps.sh
	$(MAKE) web-deps
	bash scripts/test.sh

# onnxruntime-web for the browser client, from the npm registry (pinned in web_demo/package-lock.json)
web-deps: web_demo/node_modules/.package-lock.json

web_demo/node_modules/.package-lock.json: web_demo/package-lock.json
	npm ci --prefix web_demo --no-audit --no-fund

test-slow: setup
	$(PY) -m pytest -m slow -q
