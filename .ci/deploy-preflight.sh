#!/usr/bin/env bash
# Checks what `make deploy` needs before anything is installed or built, and says exactly what is missing.
#   bash .ci/deploy-preflight.sh tools STAGE "SLS_ARGS"   # the stage, Node, Docker with buildx (no Python)
#   bash .ci/deploy-preflight.sh aws PYTHON REGION        # AWS credentials, with a Python that has boto3
# Exit status 1 and one line per problem on stderr when something is missing; 0 when all is there.
set -uo pipefail

problems=()
say() { problems+=("$1"); }

case "${1:-}" in
tools)
    stage="${2:-}"
    sls_args="${3:-}"
    if [ -z "$stage" ]; then
        say "STAGE is empty: give one, e.g. make deploy STAGE=dev REGION=eu-west-1"
    elif [ "$stage" = ci ]; then
        say "stage 'ci' only packages offline (fake image URI); deploy another STAGE, e.g. STAGE=dev"
    elif ! [[ "$stage" =~ ^[a-zA-Z][a-zA-Z0-9-]{0,15}$ ]]; then
        say "STAGE '$stage' is not usable in stack and bucket names: letters, digits and '-', starting with a letter, at most 16"
    fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        say "Node.js (node and npm) not found: install Node.js 20.19 or newer; osls runs on it"
    fi
    # With a prebuilt image (--param=imageUri=...), osls builds nothing and needs no Docker.
    if [[ "$sls_args" != *imageUri=* ]]; then
        if ! command -v docker >/dev/null 2>&1; then
            say "docker not found: install Docker 23+ with the buildx plugin (the image is built from ./Dockerfile), or deploy a prebuilt image with SLS_ARGS='--param=imageUri=ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO@sha256:...'"
        else
            if ! docker buildx version >/dev/null 2>&1; then
                say "Docker's buildx plugin is missing: osls builds with --provenance=false, which plain 'docker build' rejects ('unknown flag: --provenance'). Install it (docker-buildx-plugin from Docker's apt repository, or a distribution's docker-buildx package; Docker Desktop has it) and check with 'docker buildx version'"
            fi
            if ! docker info >/dev/null 2>&1; then
                say "the Docker daemon does not answer ('docker info' fails): start Docker, or add your user to the docker group"
            fi
        fi
    fi
    ;;
aws)
    python="${2:-python3}"
    region="${3:-}"
    if ! out="$("$python" - "$region" 2>&1 <<'PY'
import sys
import boto3
from botocore.exceptions import BotoCoreError, ClientError
try:
    sts = boto3.session.Session(region_name=sys.argv[1] or None).client("sts")
    print(sts.get_caller_identity()["Arn"])
except (BotoCoreError, ClientError) as error:
    print(f"{type(error).__name__}: {error}")
    sys.exit(1)
PY
)"; then
        say "no usable AWS credentials (${out##*$'\n'}): set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (aws configure, aws sso login) for an account allowed to create CloudFormation stacks, IAM roles, Lambda, API Gateway, S3 and ECR"
    else
        echo "deploy-preflight: deploying as $out"
    fi
    ;;
*)
    echo "usage: $0 tools STAGE SLS_ARGS | aws PYTHON REGION" >&2
    exit 2
    ;;
esac

if [ "${#problems[@]}" -gt 0 ]; then
    echo "make deploy cannot start; nothing was built or deployed:" >&2
    for p in "${problems[@]}"; do echo "  - $p" >&2; done
    exit 1
fi
