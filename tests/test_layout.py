"""The training code stays readable by a newcomer: no file in training/ over 400 lines, no function over 60."""
import ast
from pathlib import Path

import pytest

TRAINING = Path(__file__).resolve().parent.parent / "training"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
FILES = sorted(TRAINING.rglob("*.py"))


def test_the_training_package_is_there():
    assert {"train_sr.py", "train_style.py", "losses.py", "data.py", "recipes.py", "promote.py"} <= {
        f.name for f in FILES}


@pytest.mark.parametrize("path", FILES, ids=[str(f.relative_to(TRAINING)) for f in FILES])
def test_no_file_over_400_lines_and_no_function_over_60(path):
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_FILE_LINES, f"{path.name}: {lines} lines (at most {MAX_FILE_LINES})"
    long = [f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"
