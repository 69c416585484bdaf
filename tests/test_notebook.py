"""The notebook runs top to bottom on a tiny checkpoint (for a conditional and an unconditional model)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, trained

NOTEBOOK = ROOT / "notebooks" / "inspect_generator.ipynb"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cdcgan", "dcgan", "dcgan without held-out images"])
def test_notebook_runs_top_to_bottom(
    model: str, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nothing_held_out = model.endswith("held-out images")
    splits = ["data.val_fraction=0", "data.test_fraction=0"] if nothing_held_out else []
    model = model.split()[0]
    monkeypatch.setenv("GANFORGE_CKPT", str(trained(tmp_path, cache_dir, f"model={model}", *splits)))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    text = "".join(o.get("text", "") for o in outputs)
    assert "median distance to the nearest training image" in text
    assert ("no held-out real images" in text) == nothing_held_out
    assert ("held-out real images: median distance" in text) != nothing_held_out
    if model == "cdcgan":
        assert (
            len(images) == 4 and "conditional, 10 classes" in text
        )  # grid, class rows, interpolation, pairs
    else:
        assert len(images) == 3 and "no classes to show" in text
