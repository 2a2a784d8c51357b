"""Every notebook in examples/notebooks/ runs from top to bottom without an
error, in a Jupyter kernel on this interpreter (nbclient, kernel ``python3``:
ipykernel's own kernel spec launches ``sys.executable``; an extra last cell
checks that the kernel's ``sys.prefix`` is this environment's, so a
``python3`` kernel spec installed elsewhere cannot silently run the notebook
on another environment). Notebooks are committed without outputs; this
executes a copy in memory and writes nothing back."""

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "examples" / "notebooks").glob("*.ipynb"))
TIMEOUT = 300  # seconds per cell; a notebook's sampling takes seconds, compilation a little more


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: cell {index} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import json, sys; print(json.dumps(sys.prefix))"))
    client = NotebookClient(notebook, kernel_name="python3", timeout=TIMEOUT, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    printed = "".join(output.get("text", "") for output in notebook.cells[-1].outputs if output.output_type == "stream")
    assert json.loads(printed) == sys.prefix, f"the kernel ran in {printed.strip()}, not in {sys.prefix}"
