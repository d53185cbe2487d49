"""Lossless codecs beside the model: PNG, WebP and xz bits per dimension on the images --evaluate scores."""
import io
import json
import lzma

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation import codecs
from helpers import run_cli, tiny_args


def test_the_figures_are_the_codecs_own_sizes_per_dimension():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (6, 3, 16, 20), dtype=np.uint8))
    bits = codecs.codec_bits(x)
    dims = x.numel()
    png = sum(len(_png(im)) for im in x.numpy())
    assert bits["png_bits_per_dim"] == pytest.approx(8 * png / dims)
    assert bits["xz_bits_per_dim"] == pytest.approx(8 * len(lzma.compress(x.numpy().tobytes(),
                                                                           preset=9 | lzma.PRESET_EXTREME)) / dims)
    # noise does not compress: every codec pays about 8 bits a dimension, and its headers on top
    assert all(v > 7.9 for v in bits.values())
    flat = codecs.codec_bits(torch.zeros(6, 1, 28, 28, dtype=torch.uint8))
    assert flat["xz_bits_per_dim"] < 0.25  # one header (~100 bytes) for the whole split
    assert flat["png_bits_per_dim"] < 1 and flat["webp_bits_per_dim"] < 1  # a header per image
    with pytest.raises(ValueError, match="8-bit"):
        codecs.codec_bits(x.float())


def _png(im: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(im.transpose(1, 2, 0))).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def test_a_splits_figures_are_cached_by_its_bytes(tmp_path, monkeypatch):
    x = torch.randint(0, 256, (300, 1, 8, 8), dtype=torch.uint8)
    first = codecs.cached_codec_bits(x, str(tmp_path))  # 300 images: the parallel path
    assert first == codecs.codec_bits(x)
    monkeypatch.setattr(codecs, "codec_bits", lambda x: pytest.fail("measured again"))
    assert codecs.cached_codec_bits(x, str(tmp_path)) == first
    monkeypatch.undo()
    other = x.clone()
    other[0, 0, 0, 0] ^= 1  # other bytes: measured, cached apart
    codecs.cached_codec_bits(other, str(tmp_path))
    assert len(list(tmp_path.iterdir())) == 2


def test_evaluate_reports_the_codecs_beside_the_model(tiny_mnist, workdir):
    assert run_cli(tiny_args(tiny_mnist, "--image_loss_type", "logistic"))[0] == 0
    code, out, err = run_cli(["--evaluate", "--resume", "weights/r_best.pth.tar", "--data_root", tiny_mnist])
    assert code == 0, err
    report = json.load(open("weights/r_eval.json"))
    for split in ("val", "test"):
        r = report[split]
        assert {"png_bits_per_dim", "webp_bits_per_dim", "xz_bits_per_dim", "bits_per_dim"} <= set(r)
        assert 0 < r["xz_bits_per_dim"] < 8 and 0 < r["png_bits_per_dim"] < 8
    assert "PNG b/d" in out and "xz b/d" in out and "bits-back" in out
