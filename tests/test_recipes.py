"""Recipes as files: the shipped recipes say how each shipped file was made, a flag or --set overrides one key,
a run writes into runs/<recipe>/ (never weights/) and its manifest entry keeps the recipe of each stretch."""
import json
from pathlib import Path

import pytest
import torch

from tests.test_promote import folder_digest
from tests.test_style import tiny_style_inputs
from tests.test_train_sr import tiny_sr_run
from training import blend_sr, recipes, train_sr, train_style
from training.losses import describe_sr_loss

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "training" / "recipes"
SHIPPED = json.loads((ROOT / "weights" / "manifest.json").read_text())["models"]


def test_load_recipe_reads_toml_and_applies_overrides(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('lr = 2e-4\nbatch = 8\nname = "x"\n\n[blend]\nalpha = 1.05\n')
    assert recipes.load_recipe(path) == {"lr": 2e-4, "batch": 8, "name": "x", "blend": {"alpha": 1.05}}
    got = recipes.load_recipe(path, ["lr=1e-4", "gan-fraction=0.5", "blend.alpha=0.9", "device=cpu"])
    assert got["lr"] == 1e-4 and got["gan_fraction"] == 0.5 and got["blend"] == {"alpha": 0.9}
    assert got["device"] == "cpu"  # not TOML: the text itself
    assert recipes.load_recipe(path, {"batch": 16})["batch"] == 16
    with pytest.raises(ValueError, match="key=value"):
        recipes.load_recipe(path, ["lr"])
    path.write_text("lr = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        recipes.load_recipe(path)


def test_a_flag_or_set_overrides_one_key_and_the_overrides_are_recorded():
    srresnet = str(RECIPES / "srresnet.toml")
    args = train_sr.parse_args(["--recipe", srresnet, "--lr", "3e-4", "--set", "batch=4"])
    assert (args.lr, args.batch, args.patch, args.minutes) == (3e-4, 4, 40, 100.0)
    assert args.recipe_record["overrides"] == {"lr": 3e-4, "batch": 4}
    assert args.out == "runs/srresnet" and args.checkpoint_dir == "runs/srresnet/checkpoints"
    assert train_sr.parse_args(["--recipe", srresnet, "--lr", "1e-4"]).recipe_record["overrides"] == {}


def test_a_recipe_with_an_unknown_key_is_refused_with_the_known_ones(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("learning_rate = 1e-4\n")
    with pytest.raises(SystemExit):
        train_sr.parse_args(["--recipe", str(tmp_path / "bad.toml")])
    err = capsys.readouterr().err
    assert "unknown key learning_rate" in err and "gan_fraction" in err


def test_the_sr_recipes_are_how_the_shipped_files_were_made():
    srresnet = train_sr.parse_args(["--recipe", str(RECIPES / "srresnet.toml")])
    made = SHIPPED["srresnet"]["training"]
    assert (srresnet.batch, srresnet.patch, srresnet.minutes, srresnet.gan_fraction) == (
        made["batch"], made["lr_patch"], made["budget_minutes"], 0.0)
    assert srresnet.init_from == "weights/srresnet.pt" and srresnet.lr == 1e-4 and "--lr 1e-4" in made["command"]
    srgan = train_sr.parse_args(["--recipe", str(RECIPES / "srgan.toml")])
    entry = SHIPPED["srgan"]
    assert (srgan.batch, srgan.patch, srgan.minutes, srgan.gan_fraction) == (
        entry["training"]["batch"], entry["training"]["lr_patch"], entry["training"]["budget_minutes"], 1.0)
    assert srgan.consistency == entry["arch"]["lr_consistency"]
    assert describe_sr_loss("srgan", srgan) == entry["loss_segments"][-1]["loss"]  # the final stretch's loss
    blend = blend_sr.parse_args(["--recipe", str(RECIPES / "srgan.toml")])
    assert blend.alpha == entry["blend"]["alpha"] and blend.psnr == "weights/srresnet.pt"
    assert blend.out == "runs/srgan" and blend.keep_gan == "runs/srgan/unblended/srgan.pt"


@pytest.mark.parametrize("name", [n.split("/", 1)[1] for n, e in SHIPPED.items() if e.get("kind") == "style"])
def test_the_style_recipes_are_how_the_shipped_styles_were_made(name):
    args = train_style.parse_args(["--recipe", str(RECIPES / f"style_{name}.toml")])
    made = SHIPPED[f"style/{name}"]["training"]
    assert args.style == [name] and args.out == f"runs/style_{name}"
    for key in ("batch", "size", "style_size", "lr", "output_lr", "warmup_steps", "seed", "content_weight",
                "style_weight", "tv_weight", "shift_weight"):
        assert getattr(args, key) == made[key], key
    assert args.layer_weights == made["style_layers"] and list(args.channels) == [32, 64, 128]
    assert args.minutes == round(made["minutes"]) and args.final_size == made["crops"][-1]["size"]
    assert args.init_from == f"weights/style_{name}.pt" and f"--minutes {round(made['minutes'])}" in made["command"]


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("style_*.toml")), ids=lambda p: p.stem)
def test_every_style_recipe_trains_a_gallery_painting_from_a_file_in_the_clone(recipe):
    # `make train-gpu STYLES=<name>` runs these, shipped or not: each names its painting and starts from a
    # network that a fresh clone has.
    args = train_style.parse_args(["--recipe", str(recipe)])
    name = recipe.stem.removeprefix("style_")
    assert args.style == [name] and (ROOT / "training" / "paintings" / f"{name}.jpg").is_file()
    assert args.init_from and (ROOT / args.init_from).is_file() and args.out == f"runs/style_{name}"


def tiny_sr_recipe(tmp_path):
    """A recipe file of a tiny SR run (tests.test_train_sr's folders), without the output folders."""
    argv = tiny_sr_run(tmp_path)
    values = {argv[i][2:].replace("-", "_"): recipes.parse_value(argv[i + 1]) if argv[i + 1][0].isdigit()
              else argv[i + 1] for i in range(0, len(argv), 2)}
    for key in ("out", "checkpoint_dir", "docs", "device", "threads"):
        values.pop(key)
    path = tmp_path / "tiny_sr.toml"
    path.write_text(recipes.dump_toml(dict(values, gan_fraction=0.0, minutes=0.03)))
    return path


def test_a_run_writes_into_runs_recipe_and_leaves_weights_alone(tmp_path, monkeypatch):
    before = folder_digest(ROOT / "weights")
    recipe = tiny_sr_recipe(tmp_path)
    monkeypatch.chdir(tmp_path)
    machine = ["--device", "cpu", "--threads", "1"]
    train_sr.main(["--recipe", str(recipe)] + machine)
    train_sr.main(["--recipe", str(recipe), "--minutes", "0.06"] + machine)  # a second stretch, resumed
    run = tmp_path / "runs" / "tiny_sr"
    entry = json.loads((run / "manifest.json").read_text())["models"]["srresnet"]
    assert (run / "srresnet.pt").exists() and (run / "sr_training_curves.png").exists()
    assert (run / "checkpoints" / "last.pt").exists() and (run / "tiny_sr.toml").exists()
    assert entry["recipe"]["file"] == str(recipe) and entry["recipe"]["values"]["minutes"] == 0.06
    stretches = entry["recipe"]["stretches"]
    assert [s["overrides"] for s in stretches] == [{}, {"minutes": 0.06}]
    assert stretches[0]["from_step"] == {} and stretches[1]["from_step"]["srresnet"] > 0
    assert recipes.load_recipe(run / "tiny_sr.toml")["minutes"] == 0.06  # the recipe as it ran
    assert folder_digest(ROOT / "weights") == before


def test_no_trainer_writes_into_the_shipped_weights(tmp_path):
    with pytest.raises(SystemExit, match="shipped weights folder"):
        train_sr.main(tiny_sr_run(tmp_path) + ["--out", str(ROOT / "weights")])
    with pytest.raises(SystemExit, match="shipped weights folder"):
        train_style.parse_args(["--style", "x", "--out", str(ROOT / "weights")])
    with pytest.raises(SystemExit, match="shipped weights folder"):
        blend_sr.parse_args(["--gan", str(ROOT / "weights" / "srgan.pt")])


def test_a_style_budget_is_the_whole_runs_identity_pretraining_included(tmp_path):
    out, ckpt = tmp_path / "w", tmp_path / "ck"
    args = tiny_style_inputs(tmp_path) + [
        "--minutes", "0.1", "--identity-minutes", "3", "--size", "16", "--batch", "1", "--style-size", "32",
        "--channels", "4,8,8", "--device", "cpu", "--threads", "1", "--precision", "fp32", "--channels-last", "off",
        "--out", str(out), "--checkpoint-dir", str(ckpt), "--sheet", ""]
    train_style.main(args)
    identity = torch.load(ckpt / "identity_4-8-8.ckpt", weights_only=False)
    style = torch.load(ckpt / "style_blobs.ckpt", weights_only=False)
    step_s = 2.0  # a slow step's overshoot of each budget
    assert 0.25 * 6 <= identity["elapsed"] < 0.25 * 6 + step_s  # a quarter of the run at most, not 3 minutes
    assert 0.75 * 6 <= style["elapsed"] < 0.75 * 6 + step_s  # the rest of the run
    entry = json.loads((out / "manifest.json").read_text())["models"]["style/blobs"]
    assert entry["training"]["initialised_from"].startswith("identity pretraining")


def test_a_style_run_starts_from_a_served_style_file(tmp_path):
    from model.transformer_net import TransformerNet
    from training.export import export_style
    from training.manifest import sha256_file
    torch.manual_seed(4)
    export_style(TransformerNet(channels=(4, 8, 8)).eval(), tmp_path / "style_start.pt")
    args = tiny_style_inputs(tmp_path) + [
        "--minutes", "5", "--max-steps", "1", "--init-from", str(tmp_path / "style_start.pt"), "--size", "16",
        "--batch", "1", "--style-size", "32", "--channels", "4,8,8", "--device", "cpu", "--threads", "1",
        "--precision", "fp32", "--channels-last", "off", "--out", str(tmp_path / "w"),
        "--checkpoint-dir", str(tmp_path / "ck"), "--sheet", ""]
    train_style.main(args)
    entry = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]["style/blobs"]
    sha = sha256_file(tmp_path / "style_start.pt")[:12]
    assert entry["training"]["initialised_from"] == f"style_start.pt (sha256 {sha})"
    assert not (tmp_path / "ck" / "identity_4-8-8.ckpt").exists()  # no identity pretraining from a network


def make_dry_run(*words):
    """The commands ``make -n WORDS`` would run (none of them run)."""
    import subprocess
    return subprocess.run(["make", "-n", *words], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_make_train_cpu_runs_the_recipes_with_the_budgets_given_and_promote_ships_a_run():
    out = make_dry_run("train-cpu", "MINUTES=1", "STYLE_MINUTES=2", "STYLES=starry_night")
    for command in ("training.train_sr --recipe training/recipes/srresnet.toml --device cpu --minutes 1",
                    "training.train_sr --recipe training/recipes/srgan.toml --device cpu --minutes 1",
                    "training.blend_sr --recipe training/recipes/srgan.toml --skip-blended",
                    "training.train_style --recipe training/recipes/style_starry_night.toml --device cpu --minutes 2",
                    "training.train_decoders --recipe training/recipes/decoders.toml --device cpu",
                    "training.make_presets"):
        assert command in out, command
    # Only the trainers' lines: without data/ the dry run also prints `make data`'s commands.
    trainers = "\n".join(line for line in out.splitlines() if " -m training." in line and "prepare_data" not in line)
    assert "the_great_wave" not in trainers and "--out" not in trainers  # each run's own folder, runs/<recipe>/
    assert "--minutes 3" in make_dry_run("train-cpu", "DECODER_MINUTES=3")
    assert "train_decoders" not in make_dry_run("train-cpu", "UNIVERSAL=")
    gpu = make_dry_run("train-gpu")
    assert "--recipe training/recipes/srgan.toml --device cuda" in gpu and "--minutes" not in gpu  # the recipes' own
    assert "training.promote runs/srgan --force" in make_dry_run("promote", "RUN=runs/srgan", "FORCE=1")


def test_the_real_recipe_is_how_the_shipped_real_was_made():
    real = train_sr.parse_args(["--recipe", str(RECIPES / "real.toml")])
    entry = SHIPPED["real"]
    assert real.degrade and real.condition and real.export_as == "real" and real.consistency == 0
    made = entry["training"]["degradation"]
    assert (real.pool, real.patch, real.seed) == (made["pool"], made["lr_patch"], made["seed"])
    assert describe_sr_loss("srgan", real) == entry["loss_segments"][-1]["loss"]  # the GAN phase's loss
    blend = blend_sr.parse_args(["--recipe", str(RECIPES / "real.toml")])
    assert blend.name == "real" and blend.alpha == entry["blend"]["alpha"] and blend.psnr == "weights/srresnet.pt"
    assert blend.alpha_clean == entry["blend"].get("alpha_clean")  # the GAN's share at damage level 0
