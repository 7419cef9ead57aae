"""Training on several processes with torchrun (gloo on the CPU, two ranks, tiny networks): a distributed step
is the step on the whole batch, the ranks end with the same weights, and a distributed run resumes."""
import argparse
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from tests.test_style import tiny_style_inputs
from tests.test_train_sr import tiny_sr_run
from tools.fixtures import tiny_sr
from training import distributed
from training.train_sr import pixel_step, train_mode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join(rank, world, port):
    """This process as rank ``rank`` of ``world``, through the environment torchrun would give it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    return distributed.start(argparse.Namespace(device="cpu", threads=1))


def fine_tuning_step(g, lr_img, hr):
    """One pixel step of the fine-tuning phase (BatchNorm frozen, as after ``--init-from``)."""
    train_mode(g, frozen_bn=True)
    opt = torch.optim.Adam(g.parameters(), 1e-3)
    pixel_step(g, opt, lr_img, hr, None, "fp32")


def step_on_a_share(rank, world, port, folder):
    job = join(rank, world, port)
    g = tiny_sr(0)
    lr_img, hr = torch.load(os.path.join(folder, "batch.pt"))
    share = len(lr_img) // world
    fine_tuning_step(job.wrap(g), lr_img[rank * share:(rank + 1) * share], hr[rank * share:(rank + 1) * share])
    torch.save(g.state_dict(), os.path.join(folder, f"rank{rank}.pt"))
    job.close()


def test_a_step_on_2_ranks_of_2_patches_is_the_step_on_the_4_patches(tmp_path):
    torch.manual_seed(3)
    lr_img, hr = torch.rand(4, 3, 6, 6), torch.rand(4, 3, 24, 24)
    torch.save((lr_img, hr), tmp_path / "batch.pt")
    mp.spawn(step_on_a_share, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)

    whole = tiny_sr(0)
    fine_tuning_step(whole, lr_img, hr)
    before = tiny_sr(0).state_dict()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # Adam's first step is lr * g / (|g| + 1e-8) (lr 1e-3): where a gradient element is near 1e-8, summing the
    # batch in another order moves it by up to about 1e-5; a step that misses the other rank's patches moves
    # weights by up to 2e-3.
    atol = 5e-5
    for name, w in whole.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], w, atol=atol, rtol=1e-5, msg=name)
    assert any(not torch.equal(before[n], w) for n, w in whole.state_dict().items())  # the step moved weights
    alone = tiny_sr(0)
    fine_tuning_step(alone, lr_img[:2], hr[:2])
    assert max((alone.state_dict()[n] - w).abs().max().item() for n, w in whole.state_dict().items()) > 10 * atol


def check_after_a_nudge(rank, world, port, folder):
    job = join(rank, world, port)
    g = tiny_sr(0)
    digest = job.check_same_weights(g)
    if rank == 1:
        with torch.no_grad():
            g.tail.bias[0] += 1e-6
    try:
        job.check_same_weights(g)
        outcome = "passed"
    except RuntimeError as e:
        outcome = str(e)
    with open(os.path.join(folder, f"rank{rank}.txt"), "w") as f:
        f.write(f"{digest}\n{outcome}")
    job.close()


def test_the_weight_check_catches_one_rank_that_differs(tmp_path):
    mp.spawn(check_after_a_nudge, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    for r in range(2):
        digest, outcome = (tmp_path / f"rank{r}.txt").read_text().split("\n")
        assert len(digest) == 64
        assert outcome.startswith("the ranks' weights differ")


def torchrun(module, args, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", module, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout + run.stderr


def test_torchrun_trains_sr_on_2_processes_and_resumes(tmp_path):
    args = tiny_sr_run(tmp_path) + ["--gan-fraction", "0.5"]
    log = torchrun("training.train_sr", args + ["--minutes", "0.04"])
    assert "all 2 ranks hold the same generator" in log
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]
    assert set(manifest) == {"srresnet", "srgan"}
    first = {n: e["training"]["steps"] for n, e in manifest.items()}
    assert all(e["training"]["ranks"] == 2 for e in manifest.values()) and min(first.values()) > 0
    ckpt = torch.load(tmp_path / "ck" / "last.pt", weights_only=False)
    assert len(ckpt["gens"]) == 2 and not torch.equal(ckpt["gens"][0], ckpt["gens"][1])  # own patches

    # Five times the first budget: the resumed SRGAN phase gets seconds of its own even on a loaded machine.
    log = torchrun("training.train_sr", args + ["--minutes", "0.2"])
    assert "resumed from" in log and "2 ranks" in log
    again = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]["srgan"]["training"]
    assert again["steps"] > first["srgan"] and again["minutes"] >= 0.04


@pytest.fixture
def tiny_style_args(tmp_path):
    return tiny_style_inputs(tmp_path, photos=3) + [
        "--minutes", "10", "--identity-minutes", "10", "--size", "32", "--batch", "1", "--style-size", "48",
        "--channels", "4,8,8", "--device", "cpu", "--threads", "1", "--precision", "fp32", "--channels-last", "off",
        "--out", str(tmp_path / "w"), "--checkpoint-dir", str(tmp_path / "ck"), "--sheet", ""]


def test_torchrun_trains_a_style_on_2_processes_and_resumes(tmp_path, tiny_style_args):
    log = torchrun("training.train_style", tiny_style_args + ["--max-steps", "3"])
    assert "[blobs] all 2 ranks hold the same network" in log
    entry = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]["style/blobs"]
    assert entry["training"]["steps"] == 3 and entry["training"]["ranks"] == 2
    ckpt = torch.load(tmp_path / "ck" / "style_blobs.ckpt", weights_only=False)
    assert len(ckpt["py_rngs"]) == 2 and ckpt["py_rngs"][0] != ckpt["py_rngs"][1]

    log = torchrun("training.train_style", tiny_style_args + ["--max-steps", "5"])
    assert "resumed from" in log
    entry = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]["style/blobs"]
    assert entry["training"]["steps"] == 5
