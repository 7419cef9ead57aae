"""Where a run starts and how it resumes: the trainers' checkpoints (in ``<run>/checkpoints/``), and the
networks a run starts from (``--init-from``: a served file or a checkpoint).

A checkpoint holds the networks, their optimisers, the steps and the elapsed time of the budget, every rank's
random states, and the list of the run's stretches (the recipe's overrides of each rerun), so that running the
same command again goes on where the last one stopped and the manifest can say how the file was made.
"""
import os
from pathlib import Path

import torch

from model.srresnet import SRResNet
from training import degrade, recipes
from training.data import PatchSampler
from training.export import sr_from_state_dict, style_from_state_dict
from training.manifest import sha256_file


def save_sr_checkpoint(state, args):
    """Write ``last.pt`` (rank 0), with every rank's patch generator state; every rank calls it at the same
    step."""
    gens = state["job"].gather(state["gen"].get_state())
    if not state["job"].main:
        return
    ckpt = Path(args.checkpoint_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    skip = {"gen", "sampler", "vgg", "job"}
    blob = {k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in state.items() if k not in skip}
    blob["gens"] = gens
    blob["args"] = {k: v for k, v in vars(args).items() if k != "recipe_record"}
    tmp = ckpt / "last.pt.tmp"
    torch.save(blob, tmp)
    tmp.replace(ckpt / "last.pt")


def init_generator(args, device):
    """A new generator (bicubic skip, zero tail: it starts at bicubic quality), or the one of a served file
    (``--init-from``, whose widths and depth replace ``--channels`` and ``--blocks``). Returns
    ``(g, frozen_bn, init_from)``. With ``--condition`` the generator takes the damage plane; a file without
    one gets it with zero weights, so it starts as the file's network."""
    condition = getattr(args, "condition", False)
    if not args.init_from:
        g = SRResNet(channels=args.channels, blocks=args.blocks, condition=condition)
        return g.to(device), False, None
    g = sr_from_state_dict(torch.jit.load(args.init_from, map_location="cpu").state_dict(), condition=condition)
    args.channels, args.blocks = g.head[0].out_channels, len(g.body)  # the file's shapes win
    return g.to(device), True, f"{Path(args.init_from).name} (sha256 {sha256_file(args.init_from)[:12]})"


def build_sr_state(args, job, device, train_paths):
    """The run's state: a new one, or the one of ``<checkpoint-dir>/last.pt`` when there is one (the
    generator's origin and back-projection are the first stretch's). Returns ``(state, resumed)``."""
    ckpt = Path(args.checkpoint_dir) / "last.pt"
    # On the CPU: the random states must stay there; the networks and optimisers copy the rest to the device.
    resumed = torch.load(ckpt, map_location="cpu", weights_only=False) if ckpt.exists() else None
    if resumed is not None:
        args.init_from = resumed["args"].get("init_from")  # the generator's origin is the first run's
        args.consistency = resumed["args"].get("consistency", 0)  # and so is its back-projection
        args.recipe_record["values"].update(init_from=args.init_from, consistency=args.consistency)
    g, frozen_bn, init_from = init_generator(args, device)
    gen = torch.Generator().manual_seed(job.seed(args.seed))
    state = dict(job=job, g=g, gen=gen, opt_srresnet=torch.optim.Adam(g.parameters(), args.lr),
                 elapsed={}, step={}, history=[], exported={}, setup={}, frozen_bn=frozen_bn, loss_segments={},
                 init_from=init_from, stretches=[], sampler=(
                     degrade.pool_sampler(args, train_paths, device, Path(args.checkpoint_dir))
                     if getattr(args, "degrade", False) else PatchSampler(train_paths, args.patch * 4, device)))
    if resumed is not None:
        for key in ("elapsed", "step", "history", "exported", "setup", "frozen_bn", "init_from", "loss_segments",
                    "stretches"):
            state[key] = resumed.get(key, state[key])
        g.load_state_dict(resumed["g"], strict=True)
        state["opt_srresnet"].load_state_dict(resumed["opt_srresnet"])
        job.restore_random_states(resumed, gen=gen.set_state)
        job.say(f"resumed from {ckpt}: steps {state['step']}, minutes "
                f"{ {k: round(v / 60, 1) for k, v in state['elapsed'].items()} }"
                + (f", {job.world} ranks" if job.distributed else ""))
    recipes.record_stretch(state["stretches"], args.recipe_record, dict(state["step"]))
    return state, resumed


def style_start(net, path):
    """Load the network that ``path`` holds into ``net`` (a ``TransformerNet`` of the same widths): a served
    style file (TorchScript, its export rewrites turned back) or a checkpoint / state dict. Returns the
    ``initialised_from`` text of the manifest."""
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError:
        init = torch.load(path, map_location="cpu", weights_only=False)
        net.load_state_dict(init["model"] if "model" in init else init, strict=True)
        return Path(path).name
    net.load_state_dict(style_from_state_dict(module.state_dict()).state_dict(), strict=True)
    return f"{Path(path).name} (sha256 {sha256_file(path)[:12]})"


def split_optimizer_state(state, net):
    """An optimizer state saved with one parameter group (checkpoints written before the output convolution
    had its own rate) split into ``training.train_style.param_groups``' two; a two-group state is returned as it is. The last
    convolution's parameters are the network's last, so the split is by position."""
    if len(state["param_groups"]) != 1:
        return state
    n_head = len(list(net.deconv3.parameters()))
    (group,) = state["param_groups"]
    body = dict(group, params=group["params"][:-n_head])
    head = dict(group, params=group["params"][-n_head:])
    return dict(state, param_groups=[body, head])


def resume_style(path, state, args, job):
    """Restore ``state`` (``net``, ``opt``, ``rng``, counters and records) from the style checkpoint at
    ``path``."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt["channels"] != list(args.channels):
        raise ValueError(f"checkpoint {path} has channels {ckpt['channels']}, not {list(args.channels)}; "
                         "pass the same --channels or --fresh")
    state["net"].load_state_dict(ckpt["model"], strict=True)
    state["opt"].load_state_dict(split_optimizer_state(ckpt["optimizer"], state["net"]))
    state.update(step=ckpt["step"], elapsed=ckpt["elapsed"], init_from=ckpt.get("init_from"),
                 setup=ckpt.get("setup"), segments=ckpt.get("segments", []), recipes=ckpt["recipes"],
                 stretches=ckpt.get("stretches", []))
    job.restore_random_states(ckpt, py_rng=state["rng"].setstate, torch_rng=torch.set_rng_state)


def save_style(path, state, args, job):
    """Write the style checkpoint at ``path`` (rank 0, atomically); every rank calls it at the same step, and
    rank 0 writes every rank's random states."""
    py_rngs, torch_rngs = zip(*job.gather((state["rng"].getstate(), torch.get_rng_state())))
    if not job.main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": state["net"].state_dict(), "optimizer": state["opt"].state_dict(), "step": state["step"],
                "elapsed": state["elapsed"], "channels": list(args.channels), "init_from": state["init_from"],
                "py_rngs": list(py_rngs), "torch_rngs": list(torch_rngs), "setup": state["setup"],
                "segments": state["segments"], "recipes": state["recipes"], "stretches": state["stretches"]}, tmp)
    os.replace(tmp, path)
