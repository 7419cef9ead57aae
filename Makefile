# Image API: 4x super-resolution and fast style transfer, served locally and on AWS Lambda.
# `make` alone lists the targets.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# `make train-gpu` runs on whatever Python has torch with CUDA (a bare GPU box): PYTHON=...
PYTHON ?= python3
# make train-cpu / train-gpu run the recipes of training/recipes/ into runs/<recipe>/ (docs/training.md).
# Unset, each recipe's own budget runs; MINUTES=1 gives each SR recipe a minute, STYLE_MINUTES each style's.
MINUTES ?=
STYLE_MINUTES ?=
SR_RECIPES ?= srresnet srgan real
# The trained style networks that ship (Starry Night is served as a preset of the universal model, which its
# sheet chose: docs/models.md; STYLES=starry_night still trains its network, for comparison; STYLES=composition_vii
# the next try at a network where its preset lacks the painting's wedges, with the painting at 512 px).
STYLES ?= the_great_wave
# The universal style model (docs/models.md): its decoders, then the gallery's presets into the same run,
# runs/decoders/ (make promote RUN=runs/decoders). DECODER_MINUTES=1 to try it; UNIVERSAL= leaves it out.
DECODER_MINUTES ?=
UNIVERSAL ?= decoders
# More overrides for every trainer: TRAIN_ARGS='--threads 1' or TRAIN_ARGS='--set batch=32'
TRAIN_ARGS ?=
RECIPES := training/recipes
# GPUS=8: `make train-gpu` runs each trainer under torchrun, one process per GPU (training/distributed.py)
GPUS ?= 1
TRAIN_LAUNCH = $(if $(filter-out 1,$(GPUS)),$(PYTHON) -m torch.distributed.run --standalone --nproc_per_node=$(GPUS) -m,$(PYTHON) -m)
STAGE ?= dev
REGION ?= us-east-1
SLS := npx --no-install sls
SLS_ARGS ?=
STACK = imgapi-$(STAGE)
# deploy, upload-weights and destroy need boto3 (and osls, from npm), not the serving, training or test stack.
DEPLOY_VENV ?= .venv-deploy
DEPLOY_PY := $(DEPLOY_VENV)/bin/python
# PyTorch's CPU-only wheels (the Dockerfile's index): PyPI's x86_64 Linux torch is the CUDA build, which pulls
# ~3 GB of nvidia-* wheels. pip prefers the index's 2.13.0+cpu over PyPI's 2.13.0; a wheel pip finds
# locally (find-links) still wins, and an index that cannot be reached only costs pip's retries.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu

.DEFAULT_GOAL := help
.PHONY: help install serve test test-fast data train-gpu train-cpu blend-sr eval \
	promote package deploy deploy-preflight upload-weights destroy batch clean loadtest security bench

## List the targets
help:
	@awk '/^## /{d=substr($$0,4); next} /^[a-zA-Z_-]+:/{if(d){sub(":.*","",$$1); printf "  \033[1m%-16s\033[0m %s\n",$$1,d}; d=""}' $(MAKEFILE_LIST)

$(VENV)/.installed: requirements.txt requirements-local.txt requirements-test.txt requirements-train.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --retries 2 --no-deps --extra-index-url $(TORCH_INDEX_URL) "$$(grep -Eo '^torch==[^ ;#]+' requirements.txt)"
	$(PY) -m pip install -q -r requirements.txt -r requirements-local.txt -r requirements-train.txt -r requirements-test.txt
	touch $@

$(DEPLOY_VENV)/.installed: requirements-deploy.txt
	test -x $(DEPLOY_PY) || python3 -m venv $(DEPLOY_VENV)
	$(DEPLOY_PY) -m pip install -q -r requirements-deploy.txt
	touch $@

## Create .venv with the serving, local-server, training and test requirements (torch: the CPU build)
install: $(VENV)/.installed

## Run the API and the page (HOST, PORT; default 127.0.0.1:8000) with the shipped weights
serve: $(VENV)/.installed
	$(PY) -m imgapi serve

## Run every test (installs the venv, Debian chromium and the pinned osls first)
test: $(VENV)/.installed
	bash .ci/install-chromium.sh
	bash .ci/install-node.sh
	$(PY) -m pytest -q

## Run the tests without the browser and packaging ones
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q --ignore=tests/test_page.py --ignore=tests/test_deploy.py

## Fetch photos, style images and VGG16 (Debian packages, PyPI) into data/
data: $(VENV)/.installed
	$(PY) -m training.prepare_data --out data

# One trainer on each recipe of a list, stopping at the first that fails: $(call runs,LAUNCH,MODULE,RECIPES,MINUTES,DEVICE)
runs = $(foreach r,$(3),$(1) training.$(2) --recipe $(RECIPES)/$(r).toml --device $(5) $(if $(4),--minutes $(4)) $(TRAIN_ARGS) &&) true
# The decoders (one process: no torchrun) and the presets: $(call universal_run,PYTHON -m,DEVICE)
universal_run = $(if $(UNIVERSAL),$(1) training.train_decoders --recipe $(RECIPES)/decoders.toml --device $(2) \
	$(if $(DECODER_MINUTES),--minutes $(DECODER_MINUTES)) $(TRAIN_ARGS) && \
	$(1) training.make_presets)
# srgan.toml's and real.toml's [blend] (a GAN mixed with srresnet.pt, weight by weight) on their runs, once trained
blend_run = $(foreach r,$(filter srgan real,$(SR_RECIPES)),$(1) -m training.blend_sr --recipe $(RECIPES)/$(r).toml --skip-blended &&) true

## Train the shipped recipes (training/recipes/) on CUDA GPUs into runs/<recipe>/, never weights/ (MINUTES, STYLE_MINUTES, STYLES, GPUS=8 for torchrun; installs nothing; rerun to resume)
train-gpu:
	@test -f data/vgg16_hed.pt || { echo "run 'make data' first (data/ and data/vgg16_hed.pt)"; exit 1; }
	$(call runs,$(TRAIN_LAUNCH),train_sr,$(SR_RECIPES),$(MINUTES),cuda)
	$(call blend_run,$(PYTHON))
	$(call runs,$(TRAIN_LAUNCH),train_style,$(addprefix style_,$(STYLES)),$(STYLE_MINUTES),cuda)
	$(call universal_run,$(PYTHON) -m,cuda)

## The same recipes on the CPU, every core, into runs/<recipe>/ (MINUTES=1 STYLE_MINUTES=1 STYLES=starry_night to try it); rerun to resume, more minutes to go on
train-cpu: $(VENV)/.installed
	@test -f data/vgg16_hed.pt || $(MAKE) data
	$(call runs,$(PY) -m,train_sr,$(SR_RECIPES),$(MINUTES),cpu)
	$(call blend_run,$(PY))
	$(call runs,$(PY) -m,train_style,$(addprefix style_,$(STYLES)),$(STYLE_MINUTES),cpu)
	$(call universal_run,$(PY) -m,cpu)

## Blend a GAN run with srresnet.pt into srgan.pt in its folder: srgan.toml's alpha (GAN=runs/srgan/srgan.pt, ALPHA=), or the least GAN that keeps DETAIL=0.9
blend-sr: $(VENV)/.installed
	$(PY) -m training.blend_sr --gan $(or $(GAN),runs/srgan/srgan.pt) \
		$(if $(DETAIL),--detail $(DETAIL),--recipe $(RECIPES)/srgan.toml $(if $(ALPHA),--alpha $(ALPHA)))

## Ship a run: copy RUN=runs/<recipe> into weights/ if its make eval figures are at least the shipped files' (FORCE=1 ships it anyway, ONLY=name its entries; docs/training.md)
promote: $(VENV)/.installed
	@test -n "$(RUN)" || { echo "usage: make promote RUN=runs/<recipe> [FORCE=1]"; exit 1; }
	$(PY) -m training.promote $(RUN) $(if $(FORCE),--force) $(foreach n,$(ONLY),--only $(n))

## The shipped weights measured: SR Y-PSNR/SSIM/detail vs bicubic; the real-world table (JPEG, noise) beside Real-ESRGAN; every gallery painting by the universal model, the trained networks and the peer (docs/data.md; DIR=data/sr/val, SHEET=docs/sr_comparison.png, REAL_SHEET=docs/real_sheet.png, STYLE_SHEET=docs/universal_sheet.png)
eval: $(VENV)/.bench-installed
	$(PY) -m training.evaluate --data $(or $(DIR),data/sr/val) $(if $(SHEET),--sheet $(SHEET))
	$(PY) -m training.realworld --data $(or $(DIR),data/sr/val) $(if $(REAL_SHEET),--sheet $(REAL_SHEET))
	$(PY) -m training.style_sheet --data $(or $(DIR),data/sr/val) $(if $(STYLE_SHEET),--sheet $(STYLE_SHEET))

## Package the Lambda stack offline into .serverless/ (prebuilt image URI, no Docker or AWS)
package:
	bash .ci/install-node.sh
	$(SLS) package --stage ci

# Before anything is installed or built: the stage, Node, Docker with buildx (says what is missing).
deploy-preflight:
	@bash .ci/deploy-preflight.sh tools "$(STAGE)" "$(SLS_ARGS)"

## Deploy to AWS, then upload the weights (Docker with buildx + credentials; STAGE, REGION, SLS_ARGS='--param=memory=10240')
deploy: deploy-preflight $(DEPLOY_VENV)/.installed
	@bash .ci/deploy-preflight.sh aws $(DEPLOY_PY) "$(REGION)"
	bash .ci/install-node.sh
	$(SLS) deploy --stage $(STAGE) --region $(REGION) $(SLS_ARGS)
	$(MAKE) upload-weights

## Upload weights/ and its manifest to the stack's models bucket (skips files whose sha256 matches)
upload-weights: $(DEPLOY_VENV)/.installed
	$(DEPLOY_PY) -m tools.upload_weights --stack $(STACK) --region $(REGION)

## Batch a folder through the stack's S3 bucket: DIR=photos/ OP=upscale [MODEL= SCALE= DENOISE=] | OP=stylize STYLE=name or STYLE_IMAGE=painting.jpg [STRENGTH=] (STAGE, REGION, OUT=)
batch: $(DEPLOY_VENV)/.installed
	@test -n "$(DIR)" -a -n "$(OP)" || { echo "usage: make batch DIR=photos/ OP=upscale|stylize [MODEL=real SCALE=4 DENOISE=auto | STYLE=name or STYLE_IMAGE=painting.jpg, STRENGTH=1] [OUT=dir]"; exit 1; }
	$(DEPLOY_PY) -m tools.batch "$(DIR)" --op $(OP) --stack $(STACK) --region $(REGION) \
		$(if $(MODEL),--model $(MODEL)) $(if $(SCALE),--scale $(SCALE)) $(if $(DENOISE),--denoise $(DENOISE)) $(if $(STYLE),--style $(STYLE)) \
		$(if $(STYLE_IMAGE),--style-image "$(STYLE_IMAGE)") \
		$(if $(STRENGTH),--strength $(STRENGTH)) $(if $(OUT),-o "$(OUT)") $(BATCH_ARGS)

## Delete the deployment: empty its buckets, then remove the stack and its ECR repository
destroy: $(DEPLOY_VENV)/.installed
	bash .ci/install-node.sh
	$(DEPLOY_PY) -m tools.upload_weights --stack $(STACK) --region $(REGION) --empty-buckets
	$(SLS) remove --stage $(STAGE) --region $(REGION) $(SLS_ARGS)

## Bounded load test of the local server on loopback (stops by itself; tiny nets if weights/ is empty)
loadtest: $(VENV)/.installed
	$(PY) -m tools.loadtest --clients 8 --requests 200 --max-concurrent 2

## Security scans: bandit (fails at medium+) and pip-audit (SECURITY_STRICT=1 where CI has internet)
security: $(VENV)/.installed
	bash .ci/security.sh

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(PY) -m pip install -q -r requirements-bench.txt
	touch $@

## Benchmark: matmul peak, SR and style vs ONNX Runtime, serving overhead, cold start, peak RSS (docs/bench.md)
bench: $(VENV)/.bench-installed
	$(PY) -m bench.bench

## Remove caches and test artefacts (keeps .venv, data/ and weights/)
clean:
	rm -rf .pytest_cache artifacts .serverless bench/results
