# kat_backbones entry points. `make demo` runs the main job, `make test` the test suite; both set up .venv first.
PY ?= .venv/bin/python
SETUP_STAMP := .venv/.kat_setup_ok

.PHONY: setup test demo demo-cls demo-seg lint bench build clean

# Idempotent: the full set-up runs when its inputs changed (or .venv is missing); `make setup` always re-checks.
$(SETUP_STAMP): constraints.txt requirements.txt setup.py tools/setup_env.sh
	bash tools/setup_env.sh
	touch $(SETUP_STAMP)

setup:
	bash tools/setup_env.sh
	touch $(SETUP_STAMP)

# Rebuild kat_backbones._C incrementally (ninja) after editing csrc/.
build: $(SETUP_STAMP)
	bash tools/setup_env.sh --package-only

test: $(SETUP_STAMP) build
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

demo: $(SETUP_STAMP) build
	$(PY) tools/demo.py

# KAT-T classification on the synthetic ImageFolder set (CPU, a few minutes): see docs/classification.md.
demo-cls: $(SETUP_STAMP) build
	$(PY) tools/demo_cls.py

# KAT-T UperNet on the synthetic ADE20K-layout set (CPU, a few minutes): see docs/segmentation.md.
demo-seg: $(SETUP_STAMP) build
	$(PY) tools/demo_seg.py

lint: $(SETUP_STAMP)
	.venv/bin/ruff check .

bench: $(SETUP_STAMP) build
	$(PY) tools/benchmark_rational.py

clean:
	rm -rf build kat_backbones/*.so *.egg-info
