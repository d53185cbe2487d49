# Two commands on a fresh machine:
#   make train   set up .venv and train the 2018 best model (python3 train.py)
#   make test    set up .venv, lint (ruff) and run the test suite
#   make tensorboard   watch tb_logs/ in TensorBoard (installed into .venv the first time)
#   make lock    re-resolve requirements.txt in a throw-away venv and pin what it got in requirements.lock
# requirements.txt holds the ranges vae-lab works with (for your own environment); requirements.lock the
# exact versions CI tested, used here as pip constraints (-c), so .venv gets them.
# VENV can point elsewhere (CI keeps one per hash of requirements.txt + requirements.lock outside the clone).
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
TB_PORT ?= 6006

.PHONY: venv venv-key train test tensorboard clean-venv lock

$(VENV)/.installed: requirements.txt requirements.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt -c requirements.lock
	touch $@

venv: $(VENV)/.installed

# The name of CI's cached venv (.ci/run): a change to either file gets a new venv
venv-key:
	@cat requirements.txt requirements.lock | sha256sum | cut -c1-16

train: venv
	$(PY) train.py $(ARGS)
	@echo "Checkpoints: weights/  (resume with --resume weights/<lognumber>_checkpoint.pth.tar)"
	@echo "TensorBoard: make tensorboard"

# ruff first (pyproject.toml): the tree stays at zero findings
test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

# The viewer is not needed to train or test, so it is not in requirements.txt.
tensorboard: venv
	@$(PY) -c "import tensorboard" 2>/dev/null || $(VENV)/bin/pip install --quiet tensorboard
	@echo "TensorBoard: http://localhost:$(TB_PORT)/  (runs in tb_logs/; Ctrl-C stops it)"
	$(VENV)/bin/tensorboard --logdir tb_logs --port $(TB_PORT)

clean-venv:
	rm -rf $(VENV)

# torch's CUDA wheels (nvidia-*, cuda-*, triton) stay out of the lock: they exist for some platforms only and
# torch pins them itself. pip is the installer, not a dependency. A failed resolve leaves the old lock in place.
LOCK_SKIP := ^(pip|nvidia-[^=]*|cuda-[^=]*|triton)==
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp" requirements.lock.new' EXIT; \
	python3 -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/pip" install --quiet --upgrade pip; \
	"$$tmp/venv/bin/pip" install --quiet -r requirements.txt; \
	"$$tmp/venv/bin/pip" freeze --all > "$$tmp/freeze"; \
	{ echo "# The exact versions CI tested: make venv and .ci/run install requirements.txt with -c requirements.lock."; \
	  echo "# Written by 'make lock' (requirements.txt resolved in a fresh venv: Python $$("$$tmp/venv/bin/python" -V | cut -d' ' -f2), $$(uname -sm))."; \
	  echo "# Left out: torch's CUDA wheels (nvidia-*, cuda-*, triton: torch pins them per platform) and pip."; \
	  grep -viE '$(LOCK_SKIP)' "$$tmp/freeze"; } > requirements.lock.new; \
	grep -q '^torch==' requirements.lock.new; \
	mv requirements.lock.new requirements.lock; \
	echo "requirements.lock: $$(grep -c '==' requirements.lock) pins; check them with make test"
