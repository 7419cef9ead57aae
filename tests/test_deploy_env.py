"""The deploy targets' own small environment, and `make install` taking PyTorch's CPU wheel (issue 14,
item 6): deploy, upload-weights and destroy install boto3 only; `make install` asks PyTorch's CPU wheel
index for torch first and still works offline here, where the index cannot be reached."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _make(*args, env=None, timeout=600):
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _pins(name):
    return [line.split("#")[0].strip() for line in (REPO / name).read_text().splitlines()
            if line.split("#")[0].strip()]


def test_deploy_requirements_are_boto3_only_at_the_serving_pin():
    (pin,) = _pins("requirements-deploy.txt")
    assert pin.startswith("boto3==") and pin in _pins("requirements.txt")


@pytest.mark.parametrize("target", ["deploy", "upload-weights", "destroy"])
def test_deploy_targets_use_the_deploy_venv_only(target, tmp_path):
    result = _make("-n", target, "STAGE=dev", f"DEPLOY_VENV={tmp_path}/venv")
    assert result.returncode == 0, result.stderr
    commands = result.stdout
    assert "-r requirements-deploy.txt" in commands
    for other in ("requirements.txt", "requirements-train", "requirements-test", "requirements-local", ".venv/"):
        assert other not in commands.replace("requirements-deploy.txt", ""), (other, commands)
    if target != "deploy":
        assert f"{tmp_path}/venv/bin/python -m tools.upload_weights" in commands


def test_upload_weights_runs_in_the_small_deploy_venv(moto_env, tmp_path):
    """The real thing: build the deploy venv, check what is in it, upload to moto_server with it."""
    venv = tmp_path / "venv"
    built = _make(f"{venv}/.installed", f"DEPLOY_VENV={venv}", timeout=900)
    assert built.returncode == 0, built.stdout + built.stderr
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, timeout=120, check=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "boto3" in names
    assert not names & {"torch", "numpy", "pillow", "flask", "pytest", "playwright", "moto", "matplotlib"}

    import boto3
    boto3.client("s3").create_bucket(Bucket="deploy-venv-test")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "srgan.pt").write_bytes(b"weights")
    (weights / "manifest.json").write_text(json.dumps({"models": {"srgan": {
        "file": "srgan.pt", "sha256": __import__("hashlib").sha256(b"weights").hexdigest(), "kind": "sr"}}}))
    run = subprocess.run([str(venv / "bin" / "python"), "-m", "tools.upload_weights", "--bucket", "deploy-venv-test",
                          "--weights-dir", str(weights)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 uploaded, 0 unchanged" in run.stdout


def _torch_step(make_output: str) -> str:
    (line,) = [line for line in make_output.splitlines() if "--extra-index-url" in line]
    return line


def test_install_asks_the_cpu_wheel_index_for_torch():
    result = _make("-n", "-W", "requirements.txt", "install")
    assert result.returncode == 0, result.stderr
    line = _torch_step(result.stdout)
    assert re.search(r"--extra-index-url \S+/whl/cpu", line)
    assert "--no-deps" in line and "torch==" in line  # torch alone: the other packages skip that index
    dockerfile_index = re.search(r"ARG TORCH_INDEX_URL=(\S+)", (REPO / "Dockerfile").read_text())[1]
    assert f"--extra-index-url {dockerfile_index} " in line


def test_install_resolves_torch_offline_here_despite_the_unreachable_index():
    """The torch step exactly as `make install` runs it, resolved from scratch (dry run, installed packages
    ignored): the CPU index cannot be reached from here, and pip still finds the local CPU wheel."""
    result = _make("-n", "-W", "requirements.txt", "install")
    line = _torch_step(result.stdout).replace(".venv/bin/python", sys.executable, 1)
    run = subprocess.run(["bash", "-c", line + " --dry-run --ignore-installed -v"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"Would install torch-2\.\d+\.\d+\+cpu", run.stdout), run.stdout


def test_make_install_still_works_here():
    """`make install` with its recipe forced to run again, against this project's venv."""
    result = _make("-W", "requirements.txt", "install", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--extra-index-url" in result.stdout
