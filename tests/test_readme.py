"""The README's Python examples run as written (docs that cannot rot)."""
import re
from pathlib import Path

import pytest

from test_extending import _registries  # noqa: F401  (autouse: the kernel and dataset a block registers do not leak)

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
          if "-> float" not in b]          # the signature listing is not code to run


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(block):
    exec(compile(block, str(README), "exec"), {})


def test_readme_has_two_setup_commands():
    text = README.read_text()
    assert 'pip install -e ".[dev]" && threefactor train' in text
    assert "python -m pytest -q" in text
