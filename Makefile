# `make test` and `make demo` work on a fresh machine: they create the virtual environment they need.
# torch==2.13.0 goes in first when no torch is present, so a CPU-only box never pulls the CUDA wheels;
# a torch the environment already has is kept.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
# The oldest transformers we support: the GPU image runs it, so CI tests the engine against it too.
COMPAT_VENV ?= .venv-compat
COMPAT_TRANSFORMERS ?= transformers==5.17.0
# The lmms_eval/* columns are tested against this release's own functions. Installed without its dependencies (they
# would replace torch with a CUDA build); the `test` extra carries the few its task modules import.
LMMS_EVAL_PIN ?= lmms-eval==0.7.3

.PHONY: install test test-compat test-engine-default lint demo clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps '$(LMMS_EVAL_PIN)'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check .

$(COMPAT_VENV)/.installed: pyproject.toml
	test -x $(COMPAT_VENV)/bin/python || python3 -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -c "import torch" 2>/dev/null || $(COMPAT_VENV)/bin/python -m pip install -q $(TORCH_PIN)
	$(COMPAT_VENV)/bin/python -m pip install -q -e '.[test]' '$(COMPAT_TRANSFORMERS)'
	touch $@

test-compat: $(COMPAT_VENV)/.installed
	$(COMPAT_VENV)/bin/python -m pytest -q -m engine

# The engine tests on ATen's portable (non-SIMD) kernels: other summation orders, as on another CPU, so a tolerance
# that only holds for this machine's AVX path fails in CI instead of on a user's machine.
test-engine-default: install
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q -m engine

clean:
	rm -rf $(VENV) $(COMPAT_VENV) build *.egg-info

# A real sweep on the embedded tiny model and the synthetic `shapes` task: vanilla, FastV and PDrop λ 0.3/0.5/0.7.
# The tiny model has random weights, so its answers are noise; what the demo shows is the whole pipeline.
demo: install
	$(PY) run_eval.py --model tiny-llava --tasks shapes --baselines vanilla,fastv --lambda 0.3,0.5,0.7 \
		--limit 48 --batch-size 8 --max-new-tokens 8 --run-name demo --overwrite
