"""The manifest entry of a trained SR generator: which network a phase serves, its name, its trace and record.

``register`` validates (docs/data.md's protocol), traces (``training.export.export_sr``) and writes a phase's
generator into a run's folder with everything the manifest says of it: architecture, loss, training (the
degradation of ``training.degrade`` for the ``real`` model), the recipe as it ran and the figures.
"""
from pathlib import Path

import torch

from training import degrade, recipes
from training.common import hardware
from training.export import export_sr
from training.losses import describe_sr_loss
from training.manifest import update_manifest
from training.validation import validate


def served(phase, state):
    """The generator that ``phase`` validates and exports: SRGAN's moving average when it keeps one."""
    return state["ema"] if phase == "srgan" and state.get("ema") is not None else state["g"]


def register(phase, args, state, val_paths, device, train_paths, budget_s, out=None, figures=None):
    """Validate (unless ``figures`` are this generator's), trace and write ``phase``'s generator with its
    manifest entry to ``out`` (``--out``)."""
    g = served(phase, state)
    projection = g.consistency.iterations if g.consistency is not None else 0
    out = Path(out or args.out)
    v = figures or validate(g, val_paths, device)
    name = entry_name(phase, args)
    path = out / f"{name}.pt"
    export_sr(g, path)
    setup = state["setup"].get(phase, {})
    entry = dict(
        file=path.name, kind="sr", scale=4,
        arch=dict(net="SRResNet", channels=args.channels, blocks=args.blocks, bicubic_skip=True,
                  **({"lr_consistency": projection} if projection else {}),
                  **({"condition": "damage"} if args.condition else {})),
        loss=describe_sr_loss(phase, args),
        loss_segments=state["loss_segments"].get(phase, []),
        training=dict(data=str(args.data), images=len(train_paths), steps=state["step"].get(phase, 0),
                      minutes=round(state["elapsed"].get(phase, 0.0) / 60, 2),
                      budget_minutes=round(budget_s / 60, 2), batch=args.batch,
                      lr_patch=args.patch, seed=args.seed, ranks=state["job"].world,
                      initialised_from=state["init_from"],
                      hardware=setup.get("hardware", hardware(device)),
                      precision=setup.get("precision", "fp32"), channels_last=setup.get("channels_last", False),
                      step_seconds=setup.get("seconds", {}), torch=torch.__version__,
                      **({"degradation": degrade.describe(args)} if args.degrade else {})),
        recipe=recipes.manifest_record(args.recipe_record, state["stretches"]),
        validation=dict(images=[p.name for p in val_paths],
                        protocol="Y (BT.601), 4px border, Pillow BICUBIC x4 LR; detail: gradient energy "
                                 "of the outputs / of the true images"),
        **v, gain_db=round(v["psnr_y"] - v["bicubic_psnr_y"], 3),
    )
    if name != phase and phase == "srresnet":
        entry["intermediate"] = True  # the run's pixel phase, which its GAN starts from: promote leaves it
    return update_manifest(out, name, entry)


def entry_name(phase, args):
    """The manifest name of ``phase``'s generator: the phase's, or with ``--export-as NAME`` NAME for the GAN
    phase and NAME_pixel for the pixel phase before it."""
    if not args.export_as:
        return phase
    return args.export_as if phase == "srgan" else f"{args.export_as}_pixel"

