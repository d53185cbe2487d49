"""notebooks/main.ipynb executes from top to bottom (nbclient), on a small Fashion-MNIST subset."""
import json
import os

import pytest

from helpers import ROOT

NOTEBOOK = os.path.join(ROOT, "notebooks", "main.ipynb")


def test_notebook_executes_without_errors(fmnist_small, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "the notebook needs one cell tagged 'parameters'"
    # Small and quick: 2 epochs on 3000 images; UMAP is left out here because its numba
    # compilation alone takes ~30 s, and test_compare_embeddings covers it.
    params[0].source += "\n".join([
        "", f"DATA_ROOT = {fmnist_small!r}", f"WORK_DIR = {str(tmp_path / 'work')!r}", f"REPO_ROOT = {ROOT!r}",
        "EPOCHS = 2", "UNET_EPOCHS = 1",
        'COMPARE = ["--methods", "pca,vae", "--samples_per_class", "10,50", "--n_neighbours", "1,5,10",'
        ' "--test_samples_per_class", "100", "--draws", "2"]'])
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "3000 training and 1000 test images" in text
    assert "VAE is" in text and "PCA" in text  # the conclusions were printed from the numbers
    assert "With skips everywhere the reconstruction BCE is" in text and "KL per dimension" in text
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= 8  # data grid, reconstructions, samples, interpolations, KNN curves, 2-D views, 2 UNets
    res = json.load(open(tmp_path / "work" / "compare" / "results.json"))
    assert list(res["methods"]) == ["pca", "vae"] and res["protocol"]["n_train"] == 3000
    assert f"{res['methods']['vae']['test_acc_100_k10']['mean']:.3f}" in text
