"""--evaluate says what the user sees: for a decoder that reads pixels (pixelvae), the SSIM and MSE of the
pictures drawn from the code alone (what --predict draws) beside the one-step-ahead ones, labelled apart in
the table and the eval JSON; for any other family the two are one figure, and one is shown."""
import json
import re

import numpy as np
import pytest
import torch

import evaluation.metrics
from helpers import run_cli, tiny_args
from losses import ssim
from models import MODELS, build_model
from runtime.batch_pass import batch_metrics

PIXELVAE = ("--model_type", "pixelvae", "--image_loss_type", "dmol", "--pixel_layers", "1", "--pixel_channels", "8",
            "--mixture_components", "2")
SHOWN = 16  # --predict's reconstructions: the first 16 validation images


def grid_rows(path: str, n: int, size: int = 28, pad: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The two rows of --predict's reconstructions.png (torchvision's make_grid of n per row): the images
    and their reconstructions, (n, 1, size, size) each in [0, 1]."""
    from PIL import Image

    a = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255
    step = size + pad
    rows = [torch.stack([torch.from_numpy(a[pad + r * step:pad + r * step + size, pad + i * step:pad + i * step + size])
                         for i in range(n)])[:, None] for r in range(2)]
    return rows[0], rows[1]


def test_pixelvae_reports_the_pictures_beside_the_one_step_ahead_figures(tiny_mnist, workdir, monkeypatch):
    assert run_cli(tiny_args(tiny_mnist, *PIXELVAE))[0] == 0
    # the pictures' figures on the images --predict shows (a discrete likelihood draws 8-bit pixels, so its
    # PNG holds them exactly)
    monkeypatch.setattr(evaluation.metrics, "PICTURE_IMAGES", SHOWN)
    code, out, err = run_cli(["--resume", "weights/r_best.pth.tar", "--evaluate"])
    assert code == 0, err
    val = json.load(open("weights/r_eval.json"))["val"]
    assert val["picture_images"] == SHOWN and val["n"] > SHOWN
    assert val["labels"] == {"mse": "MSE (one step ahead)", "mse_from_code": "MSE (from the code)",
                             "ssim": "SSIM (one step ahead)", "ssim_from_code": "SSIM (from the code)"}
    header = next(line for line in out.splitlines() if line.startswith("split"))
    assert "SSIM (one step ahead)" in header and "SSIM (from the code)" in header
    assert not re.search(r"(SSIM|MSE)(?! \()", header)  # no figure of these left unlabelled
    assert f"first {SHOWN} images" in out
    # two figures of two different pictures: the code alone, and the code with the true pixels before each one
    assert abs(val["ssim_from_code"] - val["ssim"]) > 1e-3 and abs(val["mse_from_code"] - val["mse"]) > 1e-2
    code, _, err = run_cli(["--resume", "weights/r_best.pth.tar", "--predict"])
    assert code == 0, err
    images, pictures = grid_rows("results/r/reconstructions.png", SHOWN)
    assert pictures.std() > 0
    assert val["ssim_from_code"] == pytest.approx(ssim(pictures, images, 5).mean().item(), abs=1e-5)
    assert val["mse_from_code"] == pytest.approx(((pictures - images) ** 2).sum().item() / SHOWN, rel=1e-5)


def test_a_family_whose_decoder_does_not_read_pixels_shows_one_figure(one_good_epoch, workdir):
    code, out, err = run_cli(["--resume", "weights/r_best.pth.tar", "--evaluate"])
    assert code == 0, err
    val = json.load(open("weights/r_eval.json"))["val"]
    assert "ssim" in val and not {"ssim_from_code", "mse_from_code", "picture_images", "labels"} & set(val)
    header = next(line for line in out.splitlines() if line.startswith("split"))
    assert re.search(r" SSIM( |$)", header) and "one step ahead" not in out and "from the code" not in out


@pytest.mark.parametrize("family", sorted(MODELS))
def test_the_pictures_are_what_the_decoder_scores_unless_it_reads_pixels(family):
    torch.manual_seed(0)
    model = build_model(MODELS[family].config(model_type=family, image_size=28, image_channels=1)).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        m = batch_metrics(model, x, None, ("ssim", "ssim_from_code"))
    if model.autoregressive:  # drawn pixel by pixel from the code alone: another picture
        assert abs(m["ssim"] - m["ssim_from_code"]) > 1e-3
    else:
        torch.testing.assert_close(m["ssim_from_code"], m["ssim"])
