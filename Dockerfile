# The Lambda function's image: `sls deploy` builds it (linux/amd64) and pushes it to ECR.
# Local try-out, with the runtime interface emulator that the base image ships:
#   docker build --platform linux/amd64 -t imgapi . && docker run --rm -p 9000:8080 imgapi
#   curl -XPOST localhost:9000/2015-03-31/functions/function/invocations -d @tests/events/<event>.json
FROM public.ecr.aws/lambda/python:3.11

# PyTorch publishes its CPU-only builds on its own wheel index, not on PyPI, where the x86_64 torch wheel is
# the CUDA build and pulls ~3 GB of nvidia-* wheels this function could never use. Override the argument
# to use a mirror of that index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

COPY requirements.txt ${LAMBDA_TASK_ROOT}/

# One layer, so the files removed at the end never reach the image:
# 1. torch alone from the CPU index, at the version requirements.txt pins (one place to change it);
# 2. the serving requirements from PyPI: pip sees torch==X satisfied by the installed X+cpu and leaves it;
# 3. fail the build if a CUDA torch got in anyway;
# 4. drop what only building C++ extensions or torch's own C++ tests need (headers, cmake files, test
#    binaries: ~190 MB). bin/torch_shm_manager stays: `import torch` checks that it exists.
RUN set -eux; \
    torch_req="$(grep -E '^torch==' "${LAMBDA_TASK_ROOT}/requirements.txt")"; \
    pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "${torch_req}"; \
    pip install --no-cache-dir -r "${LAMBDA_TASK_ROOT}/requirements.txt"; \
    python -c "import torch; assert torch.version.cuda is None, 'CUDA build of torch: ' + torch.__version__"; \
    torch_dir="$(python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"; \
    rm -rf "${torch_dir}/include" "${torch_dir}/share" "${torch_dir}/test"; \
    find "${torch_dir}/bin" -type f ! -name torch_shm_manager -delete; \
    rm -f "${torch_dir}"/lib/lib*test*.so "${torch_dir}/lib/libbackend_with_compiler.so" \
          "${torch_dir}/lib/libaoti_custom_ops.so"; \
    python -c "import torch; torch.zeros(1)"

# Serving code only: training/ and its data never enter the image (.dockerignore keeps them out of the
# build context too).
COPY handler.py ${LAMBDA_TASK_ROOT}/
COPY imgapi/ ${LAMBDA_TASK_ROOT}/imgapi/
COPY model/ ${LAMBDA_TASK_ROOT}/model/
# The shipped weights and their manifest, baked in as the fallback that the app uses when MODEL_BUCKET
# is unset (a local `docker run`); on Lambda MODEL_BUCKET is set and the weights come from S3.
COPY weights/ ${LAMBDA_TASK_ROOT}/weights/
ENV WEIGHTS_DIR=${LAMBDA_TASK_ROOT}/weights

# /var/task is read-only on Lambda: compile now, or every cold start recompiles our modules in memory.
# chmod: a checkout made under a strict umask would otherwise be unreadable to the user below.
RUN python -m compileall -q "${LAMBDA_TASK_ROOT}" && chmod -R a+rX "${LAMBDA_TASK_ROOT}"

# Lambda runs the function as its own unprivileged user whatever this says; a local `docker run` should
# not be root either. Everything above is world-readable, and only /tmp (MODEL_CACHE_DIR) is written.
USER 65534

CMD ["handler.handler"]
