# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create (or refresh, when pyproject.toml or this Makefile changes) the virtual environment .venv first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_OUT ?= demo-out

export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: venv test demo demo-quick bench gpu-check lint llvm chromium clean

venv: $(STAMP)

# Every extra (render, sim, diffusion, ray, test) so CI exercises all of them; and torchattacks (advtrain's
# AutoAttack and its parts, and a peer in the benchmarks) with --no-deps, which keeps its pins of old
# requests/tqdm out of the environment (what it imports, torch, numpy, scipy and tqdm, is installed above).
# A change to this recipe refreshes an existing venv too.
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.1"
	$(BIN)/python -m pip install --quiet -e '.[all]'
	$(BIN)/python -m pip install --quiet --no-deps torchattacks
	@touch $@

# Mitsuba's CPU differentiable variant (llvm_ad_rgb) needs LLVM 19's shared library: every target that renders
# (test, demo, bench) depends on this step; the library points Dr.Jit at it (DRJIT_LIBLLVM_PATH).
llvm:
	@if ldconfig -p 2>/dev/null | grep -q 'libLLVM.so.19\|libLLVM-19'; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing libllvm19 for mitsuba's llvm_ad_rgb variant"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libllvm19 >/dev/null; \
	else echo "warning: libllvm19 is missing (apt-get install libllvm19); mitsuba's llvm variants will not load" >&2; fi

# Headless Chromium for the test that opens 3DB's dashboard (threedboard) on a render-3db run; without it that
# test is skipped.
chromium:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for the dashboard's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "warning: chromium is missing (apt-get install chromium); the dashboard's browser test is skipped" >&2; fi

# One pytest worker per core (pytest-xdist); a module's tests share a worker (module fixtures built once).
test: venv llvm chromium
	@$(BIN)/python -m pytest -n auto --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ] && [ -n "$(PYTEST_ARGS)" ]; then echo "no tests matched PYTEST_ARGS='$(PYTEST_ARGS)'"; exit 0; fi; \
	exit $$rc

demo: venv llvm
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh $(DEMO_OUT)

# One small step of every tool (about two minutes): a smoke test of this machine's install.
demo-quick: venv
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo_quick.sh $(DEMO_OUT)-quick

# Peers for the benchmarks: the `bench` extra (ART); torchattacks comes with the venv.
bench: venv llvm
	$(BIN)/python -m pip install --quiet -e '.[bench,ray]'
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/io_throughput.py
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/advtrain_pgd.py
	$(BIN)/python bench/advtrain_pgd.py --constraint linf --eps 0.03
	$(BIN)/python bench/certify_speed.py
	$(BIN)/python bench/ablate_lime.py
	$(BIN)/python bench/plant_backdoor.py
	$(BIN)/python bench/influence_farm.py
	$(BIN)/python bench/unadv_patch.py
	$(BIN)/python bench/unadv_texture.py
	$(BIN)/python bench/render_3db.py
	$(BIN)/python bench/immunize_speed.py

# On a GPU machine (about 8 minutes on one GPU): the `cuda` test tier (every tool on the GPU, torchrun on NCCL,
# AMP attacks, real out-of-memory back-offs), then thesis-scale figures as JSON lines (bench/gpu_check.py).
GPU_CHECK_WORKERS ?= 8
gpu-check: venv llvm
	$(BIN)/python -m pip install --quiet -e '.[bench,ray]'
	@$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device here')"
	$(BIN)/python -m pytest -m cuda -n $(GPU_CHECK_WORKERS) --dist loadfile $(PYTEST_ARGS)
	$(BIN)/python bench/gpu_check.py

lint: venv
	$(BIN)/ruff check lib tools tests bench

clean:
	rm -rf $(DEMO_OUT) $(DEMO_OUT)-quick .pytest_cache build *.egg-info
