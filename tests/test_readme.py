"""The README's code runs: its Python blocks run in order in one namespace,
as a reader would paste them, and what a block prints must match the
``#>`` lines written under its prints (``...`` matches anything, for values
that vary from machine to machine)."""

import contextlib
import doctest
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_CHECKER = doctest.OutputChecker()
_OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def blocks():
    return [match.group(1) for match in _BLOCK.finditer(README.read_text())]


def expected_output(block):
    lines = [line[3:] if line.startswith("#> ") else line[2:] for line in block.splitlines() if line.startswith("#>")]
    return "\n".join(lines) + "\n" if lines else None


_NAMESPACE = {"__name__": "readme"}


@pytest.mark.parametrize("index", range(len(blocks())))
def test_readme_block(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a block writes lands here
    block = blocks()[index]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, f"README.md block {index + 1}", "exec"), _NAMESPACE)
    want = expected_output(block)
    if want is not None:
        assert _CHECKER.check_output(want, printed.getvalue(), _OPTIONS), (
            f"README block {index + 1} printed:\n{printed.getvalue()}\nbut the README shows:\n{want}"
        )


def test_the_readme_has_checked_outputs():
    assert sum(expected_output(block) is not None for block in blocks()) >= 5
