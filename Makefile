# Fresh machine: `make demo` or `make test` creates .venv, installs requirements.txt, then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo demo-srflow demo-esrgan demo-srflow-da demo-ncsr test test-all bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# How `make demo` treats an earlier demo run: `--resume auto` continues an interrupted one and reports a finished
# one again without training (so a second `make demo` costs seconds and deletes nothing); `make demo DEMO_RUN=--fresh`
# trains anew, moving the earlier run aside to experiments/demo_rrdb_psnr_archived_<time>.
DEMO_RUN ?= --resume auto

demo: $(VENV)/.installed  ## stage 1 (RRDB, L1) on the photos bundled with scikit-image, then a comparison picture
	$(PY) train.py -opt options/demo/rrdb_psnr.yml $(DEMO_RUN)
	$(PY) scripts/demo_report.py -opt options/demo/rrdb_psnr.yml

demo-srflow: $(VENV)/.installed  ## all three SRFlow stages on the bundled photos (each resumes or skips by itself)
	$(PY) scripts/train_srflow_pipeline.py -opt options/demo/srflow_pipeline.yml

demo-esrgan: $(VENV)/.installed  ## stage 1, then the RRDB fine-tuned with a GAN and L1, then comparison pictures
	$(PY) train.py -opt options/demo/rrdb_psnr.yml --resume auto
	$(PY) train.py -opt options/demo/esrgan.yml $(DEMO_RUN)
	$(PY) scripts/demo_report.py -opt options/demo/esrgan.yml --set path.pretrain_model_generator= --label GAN \
	    --baseline options/demo/rrdb_psnr.yml --baseline-label "stage-1 RRDB" --lr-psnr

demo-srflow-da: $(VENV)/.installed  ## the same three stages with SRFlow-DA's couplings (docs/ntire21_flows.md)
	$(PY) scripts/train_srflow_pipeline.py -opt options/demo/srflow_da_pipeline.yml

demo-ncsr: $(VENV)/.installed  ## the same three stages with NCSR's noise-conditional flow (docs/ntire21_flows.md)
	$(PY) scripts/train_srflow_pipeline.py -opt options/demo/ncsr_pipeline.yml

test: $(VENV)/.installed  ## the default test suite (under 10 minutes on 2 CPU cores)
	$(PY) -m pytest -q

test-all: $(VENV)/.installed  ## including tests marked slow
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(VENV)/.installed
	$(PY) scripts/bench_train.py -opt options/demo/rrdb_psnr.yml

clean:
	rm -rf experiments results tb_logger
