"""Recipes: every hyper-parameter of a training run in one TOML file (``training/recipes/*.toml``).

A recipe is a flat TOML table whose keys are a trainer's option names with underscores (``gan_fraction``
for ``--gan-fraction``); a sub-table (``[blend]``) belongs to a later step of the same recipe and is left
alone by the trainer. ``load_recipe`` reads one with the standard library's ``tomllib`` and applies
overrides; ``parse_args`` gives an ``argparse`` parser its recipe: argparse defaults < the recipe file <
``--set key=value`` < a trainer's own flags (``--lr 1e-4``). Every run writes into its own folder,
``runs/<recipe name>/``, and records the recipe as it ran, with what the command line changed, once per
resumed stretch (``record_stretch``); ``training.promote`` alone copies a run into ``weights/``.
"""
import argparse
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "weights"
RUNS = Path("runs")
# Options that say where a run reads and writes or how the machine runs it, not what it learns: a rerun on
# another machine or into another folder changes them without changing the recipe.
NOT_RECIPE = {"recipe", "set", "out", "checkpoint_dir", "docs", "sheet", "device", "threads", "fresh",
              "sheet_only", "keep", "log_every", "preview_every"}


def parse_value(text):
    """A command-line value read as a TOML value (``1e-4``, ``true``, ``[32, 64]``), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _parse_override(item):
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r}: expected key=value, e.g. lr=1e-4")
    return key.strip(), parse_value(value.strip())


def load_recipe(path, overrides=None):
    """The recipe at ``path`` (a TOML file) as a dict, with ``overrides`` applied.

    ``overrides``: a mapping ``{key: value}`` or an iterable of ``"key=value"`` strings (values read as
    TOML, else as text). Keys may use dashes for underscores; a dotted key (``blend.alpha``) sets a key of
    a sub-table. Raises FileNotFoundError for a missing file and ValueError for malformed TOML or overrides.
    """
    path = Path(path)
    try:
        recipe = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    items = overrides.items() if isinstance(overrides, dict) else map(_parse_override, overrides or ())
    for key, value in items:
        *tables, last = key.replace("-", "_").split(".")
        table = recipe
        for name in tables:
            table = table.setdefault(name, {})
            if not isinstance(table, dict):
                raise ValueError(f"override {key!r}: {name} is a value, not a table, in {path}")
        table[last] = value
    return recipe


def recipe_name(path):
    """The run's name: the recipe file's stem (``training/recipes/srgan.toml`` -> ``srgan``)."""
    return Path(path).stem


def _coerce(action, value):
    """``value`` from a recipe as the parser would have made it from a flag."""
    if isinstance(action, argparse._AppendAction):
        return list(value) if isinstance(value, list) else [value]
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ValueError(f"{action.dest} = {value!r}: expected true or false")
        return value
    if action.type is not None and value != "":
        try:
            return action.type(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
            raise ValueError(f"{action.dest} = {value!r}: {e}") from None
    return value


def apply_recipe(parser, values, source):
    """Set ``parser``'s defaults to the recipe ``values`` (sub-tables are skipped: they belong to later
    steps). Raises ValueError naming the key and the known ones when a key is not one of its options."""
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    unknown = sorted(k for k, v in values.items() if k not in actions and not isinstance(v, dict))
    if unknown:
        raise ValueError(f"{source}: unknown key {', '.join(unknown)}. Known keys: "
                         f"{', '.join(sorted(k for k in actions if k not in ('recipe', 'set')))}")
    parser.set_defaults(**{k: _coerce(actions[k], v) for k, v in values.items() if k in actions})


def add_recipe_args(parser):
    """The ``--recipe`` and ``--set`` options every trainer takes."""
    parser.add_argument("--recipe", default=None,
                        help="a TOML file of the run's hyper-parameters (training/recipes/); flags override it")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key of the recipe (repeat it), e.g. --set lr=1e-4")


def parse_args(parser, argv=None):
    """Parse ``argv`` with ``parser`` (which has :func:`add_recipe_args`) on top of its recipe.

    The returned namespace has ``recipe_record``: ``{"file", "values", "overrides"}``: the recipe file (None
    without one), every hyper-parameter as the run uses it, and those that ``--set`` or a flag changed from
    the file. Bad recipes exit through ``parser.error`` with the reason."""
    known, _ = parser.parse_known_args(argv)
    file_values = {}
    try:
        if known.recipe:
            file_values = load_recipe(known.recipe)
            apply_recipe(parser, file_values, known.recipe)
        baseline = vars(parser.parse_args([]))
        if known.set:
            apply_recipe(parser, load_recipe(known.recipe, known.set) if known.recipe
                         else dict(map(_parse_override, known.set)), "--set")
    except (OSError, ValueError) as e:
        parser.error(str(e))
    args = parser.parse_args(argv)
    values = {k: _plain(v) for k, v in vars(args).items() if k not in NOT_RECIPE}
    overrides = {k: v for k, v in values.items() if _plain(baseline.get(k)) != v}
    args.recipe_record = dict(file=known.recipe, values=values, overrides=overrides)
    return args


def _plain(value):
    """``value`` as JSON and TOML can hold it (tuples become lists, paths text)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def record_stretch(stretches, record, at):
    """Append this stretch of the run to ``stretches`` (a list kept in the checkpoint) unless it trains with
    the same recipe and overrides as the last one; ``at`` is where it starts (a step count, or the steps of
    each phase). Returns ``stretches``."""
    this = dict(file=record["file"], overrides=record["overrides"])
    if not stretches or {k: stretches[-1].get(k) for k in this} != this:
        stretches.append(dict(from_step=at, **this))
    return stretches


def manifest_record(record, stretches):
    """The ``recipe`` of a manifest entry: the file, every value as the run's last stretch used it, and each
    stretch's overrides."""
    return dict(file=record["file"], values=record["values"], stretches=stretches)


def run_folder(args, default_name):
    """``runs/<recipe name>`` (``default_name`` without a recipe): where the run writes everything."""
    return RUNS / (recipe_name(args.recipe) if args.recipe else default_name)


def refuse_shipped(*folders):
    """SystemExit when one of ``folders`` is the shipped ``weights/``: a run writes into its own folder, and
    ``make promote`` copies it into ``weights/`` when it measures at least as well."""
    for folder in folders:
        if folder and Path(folder).resolve() == SHIPPED.resolve():
            raise SystemExit(f"{folder} is the shipped weights folder: a training run writes into runs/<recipe>/ "
                             "and `make promote RUN=runs/<recipe>` copies it there when it measures as well")


def dump_toml(values, header=""):
    """``values`` (scalars, lists of scalars, one level of sub-tables) as TOML text, keys in order."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{k} = {value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"
