# hf_reid — the everyday commands. Every target installs what it needs first.
PYTHON ?= python3
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

QUICKSTART_DIR ?= runs/quickstart

.PHONY: install quickstart quickstart-clip-reid test test-fast quality style bench synthclip clean

# torch first, pinned to the local CPU build where none is installed: an open torch
# requirement resolved with no torch present pulls several GB of CUDA packages.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	@$(PYTHON) -m pip install -q -e ".[dev]"

# The main job: SynthPeds (generated on first use into data/synthpeds), ReText from the shipped
# SynthCLIP on one CPU process (sources d0-d2 + the captioned set; tested on the unseen domain d3),
# then the results table.
ACCELERATE_CPU = accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no \
	--dynamo_backend no --num_cpu_threads_per_process 2

quickstart: install
	$(ACCELERATE_CPU) recipes/retext.py --config recipes/configs/retext_synthpeds.yaml --output_dir $(QUICKSTART_DIR)
	$(PYTHON) -m hf_reid.report $(QUICKSTART_DIR)/eval_results.json

# The CLIP-ReID base the same way (in-domain on synthpeds_d0, d3 for reference).
quickstart-clip-reid: install
	$(ACCELERATE_CPU) recipes/clip_reid.py --config recipes/configs/clip_reid_synthpeds.yaml \
		--output_dir runs/quickstart_clip_reid
	$(PYTHON) -m hf_reid.report runs/quickstart_clip_reid/eval_results.json

# Re-train the shipped SynthCLIP (recipes/pretrain_clip.py) and install it into the package.
synthclip: install
	$(PYTHON) recipes/pretrain_clip.py --config recipes/configs/pretrain_clip_synthpeds.yaml \
		--output_dir runs/synthclip
	rm -rf hf_reid/assets/synthclip && cp -r runs/synthclip/synthclip hf_reid/assets/synthclip
	cp runs/synthclip/zeroshot_results.json hf_reid/assets/synthclip/zeroshot_results.json

test: install
	$(PYTHON) -m pytest -q tests

test-fast: install
	$(PYTHON) -m pytest -q -m "not slow" tests

quality: install
	$(PYTHON) -m ruff check hf_reid recipes dataset_scripts benchmarks tests
	$(PYTHON) -m ruff format --check hf_reid recipes dataset_scripts benchmarks tests

style: install
	$(PYTHON) -m ruff check --fix hf_reid recipes dataset_scripts benchmarks tests
	$(PYTHON) -m ruff format hf_reid recipes dataset_scripts benchmarks tests

bench: install
	$(PYTHON) benchmarks/run_all.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache runs
