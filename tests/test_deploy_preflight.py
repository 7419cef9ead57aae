"""`make deploy` checks its prerequisites first (issue 14, item 2): Docker with buildx, the stage, Node, AWS
credentials; it says exactly what is missing, before anything is installed, built or deployed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / ".ci" / "deploy-preflight.sh"

DOCKER_WITHOUT_BUILDX = """#!/bin/sh
# A Docker CLI without the buildx plugin, as Debian's docker.io package installs it.
if [ "$1" = buildx ]; then echo "docker: 'buildx' is not a docker command." >&2; exit 1; fi
exit 0
"""
DOCKER_WITH_BUILDX = "#!/bin/sh\nexit 0\n"
RECORDER = "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> \"$CALLS\"\nexit 0\n"


def _fake_bin(tmp_path: Path, docker: str | None) -> Path:
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in {"docker": docker, "npx": RECORDER}.items():
        if body is not None:
            (fake / name).write_text(body)
            (fake / name).chmod(0o755)
    return fake


def _env(tmp_path: Path, fake: Path, path: str | None = None) -> dict:
    env = {**os.environ, "CALLS": str(tmp_path / "calls.log"),
           "PATH": f"{fake}:{path if path is not None else os.environ['PATH']}"}
    env.pop("MAKEFLAGS", None)
    return env


def _run(args, env):
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def test_docker_without_buildx_is_named_before_anything_runs(tmp_path):
    fake = _fake_bin(tmp_path, DOCKER_WITHOUT_BUILDX)
    result = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "deploy", "STAGE=dev", "REGION=eu-west-1"],
                            env=_env(tmp_path, fake), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "buildx plugin is missing" in result.stderr and "--provenance" in result.stderr
    assert "nothing was built or deployed" in result.stderr
    assert not (tmp_path / "calls.log").exists()  # no npx (osls) call, so no build and no stack


def test_a_prebuilt_image_needs_no_docker(tmp_path):
    fake = _fake_bin(tmp_path, DOCKER_WITHOUT_BUILDX)
    result = _run(["tools", "dev", "--param=imageUri=1.dkr.ecr.eu-west-1.amazonaws.com/x@sha256:" + "0" * 64],
                  _env(tmp_path, fake))
    assert result.returncode == 0, result.stderr


def test_missing_docker_and_the_ci_stage_are_both_reported(tmp_path):
    fake = _fake_bin(tmp_path, None)
    node_dir = Path(subprocess.run(["bash", "-c", "command -v node"], capture_output=True, text=True).stdout.strip()).parent
    env = _env(tmp_path, fake, path=f"{node_dir}:/usr/bin:/bin")
    if Path("/usr/bin/docker").exists() or Path("/bin/docker").exists():
        pytest.skip("a docker binary is on the system path")
    result = _run(["tools", "ci", ""], env)
    assert result.returncode == 1
    assert "stage 'ci' only packages offline" in result.stderr
    assert "docker not found" in result.stderr


def test_everything_there_passes(tmp_path):
    fake = _fake_bin(tmp_path, DOCKER_WITH_BUILDX)
    result = _run(["tools", "dev", ""], _env(tmp_path, fake))
    assert result.returncode == 0, result.stderr


def _no_credentials_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE="/nonexistent/aws-config", AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
               AWS_EC2_METADATA_DISABLED="true")
    return env


def test_missing_credentials_are_reported(tmp_path):
    result = _run(["aws", sys.executable, "eu-west-1"], _no_credentials_env(tmp_path))
    assert result.returncode == 1
    assert "no usable AWS credentials" in result.stderr and "AWS_PROFILE" in result.stderr


def test_working_credentials_pass_and_name_the_identity(moto_env, tmp_path):
    result = _run(["aws", sys.executable, "us-east-1"], dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "deploying as arn:aws:" in result.stdout
