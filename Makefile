# Two commands on a fresh machine:
#   make train   set up .venv and train the 2018 best model (python3 train.py)
#   make test    set up .venv, lint (ruff) and run the test suite
#   make tensorboard   watch tb_logs/ in TensorBoard (installed into .venv the first time)
# VENV can point elsewhere (CI keeps one per requirements hash outside the clone).
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
TB_PORT ?= 6006

.PHONY: venv train test tensorboard clean-venv

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

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
