# Image API: 4x super-resolution and fast style transfer, served locally and on AWS Lambda.
# `make` alone lists the targets.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# `make train-gpu` runs on whatever Python has torch with CUDA (a bare GPU box): PYTHON=...
PYTHON ?= python3
MINUTES ?= 9
STYLE_MINUTES ?= 3
STYLES ?= starry_night the_great_wave
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
	package deploy deploy-preflight upload-weights destroy batch clean loadtest security bench

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

## Train SRResNet then SRGAN, then the styles, on CUDA GPUs (MINUTES=9 for SR, GPUS=8 for torchrun; installs nothing; rerun to resume)
train-gpu:
	@test -f data/vgg16_hed.pt || { echo "run 'make data' first (data/ and data/vgg16_hed.pt)"; exit 1; }
	$(TRAIN_LAUNCH) training.train_sr --device cuda --minutes $(MINUTES) --batch 32 --patch 32 --val-every 60
	$(TRAIN_LAUNCH) training.train_style --device cuda --minutes $(STYLE_MINUTES) --identity-minutes 0.5 \
		--size 256 --batch 8 $(foreach s,$(STYLES),--style $(s))

## The same pipeline on the CPU, both cores (MINUTES for SR, STYLE_MINUTES a style); rerun to resume, more minutes to go on
train-cpu: $(VENV)/.installed
	@test -f data/vgg16_hed.pt || $(MAKE) data
	$(PY) -m training.train_sr --device cpu --minutes $(MINUTES) --batch 8 --patch 24 --val-every 300
	$(PY) -m training.train_style --device cpu --minutes $(STYLE_MINUTES) --size 128 --final-size 256 \
		--final-fraction 0.2 $(foreach s,$(STYLES),--style $(s))

## srgan.pt as GAN x alpha + SRResNet x (1 - alpha): the least GAN that keeps DETAIL=0.9 on the training photos (GAN=...)
blend-sr: $(VENV)/.installed
	$(PY) -m training.blend_sr --gan $(or $(GAN),weights/srgan.pt) --psnr weights/srresnet.pt \
		--detail $(or $(DETAIL),0.9)

## The shipped weights measured: SR Y-PSNR/SSIM/detail vs bicubic, styles' Gram and content figures (docs/data.md; DIR=data/sr/val, SHEET=docs/sr_comparison.png)
eval: $(VENV)/.installed
	$(PY) -m training.evaluate --data $(or $(DIR),data/sr/val) $(if $(SHEET),--sheet $(SHEET))

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

## Batch a folder through the stack's S3 bucket: DIR=photos/ OP=upscale [MODEL= SCALE=] | OP=stylize STYLE=name or STYLE_IMAGE=painting.jpg [STRENGTH=] (STAGE, REGION, OUT=)
batch: $(DEPLOY_VENV)/.installed
	@test -n "$(DIR)" -a -n "$(OP)" || { echo "usage: make batch DIR=photos/ OP=upscale|stylize [MODEL=srgan SCALE=4 | STYLE=name or STYLE_IMAGE=painting.jpg, STRENGTH=1] [OUT=dir]"; exit 1; }
	$(DEPLOY_PY) -m tools.batch "$(DIR)" --op $(OP) --stack $(STACK) --region $(REGION) \
		$(if $(MODEL),--model $(MODEL)) $(if $(SCALE),--scale $(SCALE)) $(if $(STYLE),--style $(STYLE)) \
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
