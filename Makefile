# Two commands on a fresh machine:
#   make train   set up .venv and train the 2018 best model (python3 train.py)
#   make test    set up .venv and run the test suite
# VENV can point elsewhere (CI keeps one per requirements hash outside the clone).
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: venv train test clean-venv

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

train: venv
	$(PY) train.py $(ARGS)
	@echo "Checkpoints: weights/  (resume with --resume weights/<lognumber>_checkpoint.pth.tar)"
	@echo "TensorBoard: $(VENV)/bin/tensorboard --logdir tb_logs --port 6006  (pip install tensorboard)"

test: venv
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
