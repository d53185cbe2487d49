"""Test helpers: IDX writers, a TensorBoard event reader, and an in-process CLI runner."""
from __future__ import annotations

import contextlib
import io
import os
import struct

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_CKPT = os.path.join(ROOT, "..", "shared", "reference", "fmnist_fc_conv_l10_rebalance_no_norm_best.pth.tar")


def write_idx(path: str, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian sizes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.tobytes())


def write_dataset(root: str, folder: str, train_x, train_y, test_x, test_y) -> str:
    """Lay out IDX files as torchvision expects: root/<folder>/raw/*-ubyte."""
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw, exist_ok=True)
    write_idx(os.path.join(raw, "train-images-idx3-ubyte"), train_x)
    write_idx(os.path.join(raw, "train-labels-idx1-ubyte"), train_y)
    write_idx(os.path.join(raw, "t10k-images-idx3-ubyte"), test_x)
    write_idx(os.path.join(raw, "t10k-labels-idx1-ubyte"), test_y)
    return root


def read_events(logdir: str, reader: str = "accumulator") -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows of a vae-lab run: tag -> [(step, value)] for scalars.

    Reads the run's per-axis folders and applies TensorBoard's rules for hiding what a killed
    run wrote after its checkpoint (``reader``: see tblog.read_run; "raw" hides nothing).
    Images come as ``image:<tag>`` -> [(0, number of images)].
    """
    from tblog import read_logdir

    out: dict[str, list[tuple[int, float]]] = {}
    images: dict[str, int] = {}
    for tag, vals in read_logdir(logdir, reader).items():
        if vals and vals[0][1] is None:
            images[tag] = len(vals)
        else:
            out[tag] = vals
    out.update({f"image:{k}": [(0, float(n))] for k, n in images.items()})
    return out


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run train.py's command line in-process: (exit code, stdout, stderr)."""
    import train
    import utils

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = utils.run_cli(train.main, train.get_args_parser(), argv)
    return code, out.getvalue(), err.getvalue()
