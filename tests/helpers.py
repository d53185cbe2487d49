"""Test helpers: IDX writers, a TensorBoard event reader, and an in-process CLI runner."""
from __future__ import annotations

import contextlib
import io
import os
import struct

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_CKPT = os.environ.get("VAE_LAB_REFERENCE_CKPT", os.path.join(
    ROOT, "..", "shared", "reference", "fmnist_fc_conv_l10_rebalance_no_norm_best.pth.tar"))


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


def read_events(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """Scalars of every TFRecord event file under ``logdir`` (not sub-runs): tag -> [(step, value)]."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    images: dict[str, int] = {}
    for name in sorted(os.listdir(logdir)):
        if "tfevents" not in name:
            continue
        with open(os.path.join(logdir, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            payload = data[pos + 12:pos + 12 + length]
            pos += 12 + length + 4
            ev = event_pb2.Event()
            ev.ParseFromString(payload)
            for v in ev.summary.value:
                if v.HasField("image"):
                    images[v.tag] = images.get(v.tag, 0) + 1
                elif v.HasField("simple_value") or v.WhichOneof("value") == "simple_value":
                    out.setdefault(v.tag, []).append((ev.step, v.simple_value))
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
