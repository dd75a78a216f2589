# Set-up is part of every target: the virtualenv is built from pyproject.toml on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test data train bench clean-venv

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,bench,roi]"
	# MTCNN face detector for ROI; its metadata pins torch<2.3, so it goes in without deps
	# (the ones it needs are in the roi extra).
	$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

demo: $(STAMP)     ## encode + decode a sample with the shipped model
	$(PY) -m scripts.demo

test: $(STAMP)     ## the test suite (what CI runs)
	$(PY) -m pytest -q -p no:cacheprovider

data: $(STAMP)     ## fetch and prepare the training photos into data/
	$(PY) -m scripts.fetch_data

train: $(STAMP)    ## train the default model (resumes runs/mc320/last.pt)
	LD_PRELOAD=$$(ls /usr/lib/*/libtcmalloc_minimal.so.4 2>/dev/null | head -1) OMP_WAIT_POLICY=PASSIVE \
	  $(PY) -m scripts.train --run runs/mc320 --init hpgc-n128m320-7 --lr 1e-5 --warmup 500 --crop 256 --area-power 0.5 --shapes 0.15

bench: $(STAMP)    ## RD benchmark against the classical codecs
	$(PY) -m scripts.rd_benchmark --images ../shared/data/eval/images --out bench_out

clean-venv:
	rm -rf $(VENV)
