# hf_reid — the everyday commands. Every target installs what it needs first.
PYTHON ?= python3
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

QUICKSTART_DIR ?= runs/retext

.PHONY: install quickstart quickstart-clip-reid test test-fast quality style bench synthclip clean

# torch first, where none is installed: an open torch requirement (or torch==X from PyPI on
# Linux) pulls several GB of CUDA packages. Without a GPU (no nvidia-smi) the CPU build comes from
# PyTorch's CPU wheel index; where that index cannot be reached (a short timeout, no retries) the
# plain requirement is installed, as pip's configured indexes resolve it. With a GPU: the normal build.
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || { \
		if command -v nvidia-smi >/dev/null 2>&1; then \
			$(PYTHON) -m pip install torch==$(TORCH_VERSION); \
		else \
			$(PYTHON) -m pip install --index-url $(TORCH_CPU_INDEX) --timeout 10 --retries 0 torch==$(TORCH_VERSION) \
			|| { echo "$(TORCH_CPU_INDEX) unreachable: installing torch==$(TORCH_VERSION) from the configured indexes"; \
				$(PYTHON) -m pip install torch==$(TORCH_VERSION); }; \
		fi; \
	}
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

test: install test-browser
	$(PYTHON) -m pytest -q tests

# What the browser test of `hf-reid demo` (tests/test_demo_browser.py) needs beyond the dev extras:
# gradio, and headless Chromium with its chromedriver from Debian's packages (the same version).
# gradio is installed without its dependencies, then those except Pillow: every gradio release
# requires pillow<13, and pip would replace the installed Pillow 13, whose encoders the SynthPeds
# byte digests pin (tests/test_synthetic_safety.py). Without root or apt-get, the browser cannot be
# installed here: a message says how, and the browser test fails saying so.
GRADIO_VERSION ?= 6.31.0
GRADIO_CLIENT_VERSION ?= 2.7.2
GRADIO_DEPENDENCIES = "anyio>=3,<5" "brotli>=1.2.1" "fastapi>=0.115.2,<1" "fsspec" "groovy~=0.1" \
	"hf-gradio>=0.4.1,<1" "httpx>=0.24.1,<1" "huggingface-hub>=1.16,<3" "jinja2<4" "markupsafe>=2,<4" \
	"numpy>=1,<3" "orjson~=3.0" "packaging" "pandas>=1,<4" "pydantic>=2,<=3" "pydub<1" \
	"python-multipart>=0.0.18,<1" "pytz>=2017.2" "pyyaml>=5,<7" "safehttpx>=0.1.7,<0.2" \
	"semantic-version~=2.0" "starlette>=1.0.1,<2" "tomlkit>=0.12,<0.15" "typer>=0.12,<1" \
	"typing-extensions~=4.0" "uvicorn>=0.14"

.PHONY: test-browser
test-browser:
	@$(PYTHON) -c "import gradio" 2>/dev/null || { \
		$(PYTHON) -m pip install -q --no-deps gradio==$(GRADIO_VERSION) gradio_client==$(GRADIO_CLIENT_VERSION) \
		&& $(PYTHON) -m pip install -q $(GRADIO_DEPENDENCIES); \
	}
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing headless Chromium for the browser test (apt-get install chromium chromium-driver)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver >/dev/null; \
	else \
		echo "make test: chromium and chromedriver are missing, and installing them needs root and apt-get:"; \
		echo "  sudo apt-get install -y chromium chromium-driver   (tests/test_demo_browser.py fails without them)"; \
	fi

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
