"""Every file or folder of the repository that the README or a page of docs/ names exists: a reader who
follows `training/train_sr.py`, [the API](docs/api.md) or ![a sheet](sr_comparison.png) finds it.

Checked: inline code spans and fenced code blocks, word by word, for repository-relative paths (a known
top-level folder followed by a path, or a known top-level file), and every link or image target that is not
a URL or an anchor (relative to the page that holds it). Skipped: anything with a placeholder (`<name>`,
`*`, `...`, `$VAR`), and paths under folders that are made by commands rather than kept in git (`data/`,
`checkpoints/`, `runs/`, `bench/results/`)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Top-level folders whose files the docs name by repository-relative path.
FOLDERS = ("docs", "weights", "training", "imgapi", "model", "tools", "tests", "bench", ".ci")
# Under those folders, what commands write and git ignores.
GENERATED = ("bench/results/",)
# Top-level files a page may name by themselves.
TOP_FILES = re.compile(r"(README\.md|SECURITY\.md|CONTRIBUTING\.md|LICENSE|CHANGELOG\.md|Makefile|Dockerfile|"
                       r"\.dockerignore|serverless\.yml|handler\.py|batch_handler\.py|package(-lock)?\.json|"
                       r"pytest\.ini|pyproject\.toml|requirements(-[a-z]+)?\.txt)")
PLACEHOLDER = re.compile(r"[<>*{}$|]|\.\.\.|…")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def path_in(word):
    """The repository-relative path a word of code names, or None: ``KEY=docs/x.png`` -> ``docs/x.png``,
    ``training/train_sr.py:240`` -> ``training/train_sr.py``, ``(imgapi/app.py,`` -> ``imgapi/app.py``."""
    word = word.strip("()[],;:.'\"")
    word = word.split("=", 1)[1] if re.match(r"^-*[A-Za-z_][\w-]*=", word) else word
    word = re.sub(r"(:\d+(-\d+)?|#[\w-]*)$", "", word).strip("()[],;:'\"")
    if not word or PLACEHOLDER.search(word) or "://" in word:
        return None
    word = word[2:] if word.startswith("./") else word
    if word.startswith(GENERATED):
        return None
    top = word.split("/", 1)[0]
    if top in FOLDERS and (word == top + "/" or "/" in word):
        return word
    if "/" not in word and TOP_FILES.fullmatch(word):
        return word
    return None


def named_paths(page):
    """(path relative to the repository, what the page wrote) for every path the page names."""
    text = page.read_text(encoding="utf-8")
    found = []
    for block in FENCE.finditer(text):
        found += [(p, p) for p in map(path_in, block.group(0).split()) if p]
    prose = FENCE.sub("", text)
    for span in CODE_SPAN.finditer(prose):
        found += [(p, p) for p in map(path_in, span.group(2).split()) if p]
    for target in LINK.findall(prose):
        target = target.split("#", 1)[0]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or PLACEHOLDER.search(target):
            continue
        resolved = (page.parent / target).resolve()
        found.append((resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else target, target))
    return found


def test_the_parser_finds_paths_and_skips_what_is_not_one(tmp_path):
    assert path_in("SHEET=docs/sr_comparison.png") == "docs/sr_comparison.png"
    assert path_in("(training/train_sr.py:240,") == "training/train_sr.py"
    assert path_in("weights/") == "weights/" and path_in("Makefile") == "Makefile"
    for word in ("runs/<recipe>/", "tests/test_deploy*.py", "data/sr/val", "srgan.pt", "photos/", "train_sr.py",
                 "https://example.com/docs/x", "$(PY)", "training.evaluate", "bench/results/levers.json"):
        assert path_in(word) is None, word


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_path_a_page_names_exists(page):
    missing = sorted({written for path, written in named_paths(page) if not (ROOT / path).exists()})
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_readme_links_its_pictures_and_pages():
    targets = {path for path, _ in named_paths(ROOT / "README.md")}
    assert {"docs/api.md", "docs/models.md"} <= targets
    assert targets & {"docs/styles_contact_sheet.png", "docs/sr_comparison.png"}
