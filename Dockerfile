# The Lambda function's image: `sls deploy` builds it (linux/amd64) and pushes it to ECR.
# Local try-out, with the runtime interface emulator that the base image ships and the local weights:
#   docker build --platform linux/amd64 -t imgapi .
#   docker run --rm -p 9000:8080 -v "$PWD/weights:/var/task/weights:ro" imgapi
#   curl -XPOST localhost:9000/2015-03-31/functions/function/invocations -d @tests/events/<event>.json
# 3.12: Amazon Linux 2023, supported until Oct 2028 (the 3.11 image, on Amazon Linux 2, was deprecated in
# June 2026). The base sets WORKDIR to LAMBDA_TASK_ROOT (/var/task) and ships the runtime interface client.
FROM public.ecr.aws/lambda/python:3.12

# PyTorch publishes its CPU-only builds on its own wheel index, not on PyPI, where the x86_64 torch wheel is
# the CUDA build and pulls ~3 GB of nvidia-* wheels this function could never use. Override the argument
# to use a mirror of that index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

COPY requirements.txt ${LAMBDA_TASK_ROOT}/

# One layer, so the files removed at the end never reach the image. Only sh and the runtime's python3
# and pip are used, so nothing depends on which utilities the minimal Amazon Linux 2023 base ships:
# 1. torch alone from the CPU index, at the version requirements.txt pins (one place to change it);
# 2. the serving requirements from PyPI: pip sees torch==X satisfied by the installed X+cpu and leaves it;
# 3. fail the build if a CUDA torch got in anyway;
# 4. drop what only building C++ extensions or torch's own C++ tests need (headers, cmake files, test
#    binaries and libraries: ~190 MB). bin/torch_shm_manager stays: `import torch` checks it exists.
RUN set -eux; \
    cd "${LAMBDA_TASK_ROOT}"; \
    torch_req="$(python3 -c 'import re; print(re.search(r"^torch==[^\s;#]+", open("requirements.txt").read(), re.M)[0])')"; \
    python3 -m pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "${torch_req}"; \
    python3 -m pip install --no-cache-dir -r requirements.txt; \
    python3 -c "import torch; assert torch.version.cuda is None, 'CUDA build of torch: ' + torch.__version__"; \
    python3 -c "import glob, os, shutil, importlib.util; \
torch_dir = importlib.util.find_spec('torch').submodule_search_locations[0]; \
[shutil.rmtree(os.path.join(torch_dir, d)) for d in ('include', 'share', 'test') if os.path.isdir(os.path.join(torch_dir, d))]; \
junk = glob.glob(os.path.join(torch_dir, 'bin', '*')) + glob.glob(os.path.join(torch_dir, 'lib', 'lib*test*.so')); \
[os.remove(f) for f in junk if os.path.isfile(f) and os.path.basename(f) != 'torch_shm_manager']"; \
    python3 -c "import torch; torch.jit.script(torch.nn.Conv2d(3, 3, 1))(torch.zeros(1, 3, 4, 4))"

# Serving code only, exactly what handler.py and batch_handler.py (the batch function's command) import (tests/test_deploy.py checks): not training/, not
# model/ (the weights are TorchScript, which loads without the Python class definitions), and no weights:
# on Lambda they come from the models bucket (MODEL_BUCKET), so one upload updates them without a
# rebuild. For a local `docker run` without a bucket, mount them: -v "$PWD/weights:/var/task/weights:ro".
COPY handler.py batch_handler.py ${LAMBDA_TASK_ROOT}/
COPY imgapi/ ${LAMBDA_TASK_ROOT}/imgapi/

# /var/task is read-only on Lambda: compile now, or every cold start recompiles our modules in memory.
# chmod: a checkout made under a strict umask would otherwise be unreadable to the user below.
RUN python3 -m compileall -q "${LAMBDA_TASK_ROOT}" && chmod -R a+rX "${LAMBDA_TASK_ROOT}"

# Lambda runs the function as its own unprivileged user whatever this says; a local `docker run` should
# not be root either. Everything above is world-readable, and only /tmp (MODEL_CACHE_DIR) is written.
USER 65534

CMD ["handler.handler"]
