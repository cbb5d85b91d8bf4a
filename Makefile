# Two commands do all the set-up on a fresh machine: `make book` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SCALE  ?= cpu
NB     ?= 00_baselines

.PHONY: install test book chapter zoo bench clean

install: $(STAMP)

# torch and torchvision first (pinned; on these machines the wheels are on local disk), then the
# project, which brings compressai==1.2.8 with numpy<2 and jupyter-book==1.0.4.post1.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest tests

book: $(STAMP)
	$(BIN)/python -m lic.book run all --scale cpu
	$(BIN)/python -m lic.book build --scale cpu

chapter: $(STAMP)
	$(BIN)/python -m lic.book run $(NB) --scale $(SCALE)

zoo: $(STAMP)
	$(BIN)/python -m lic.zoo train --scale cpu

bench: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf _build runs/smoke
