"""The 2018 project's published checkpoint: where vae-lab looks for it and where to get it.

The 2018 project, https://github.com/snakers4/playing_with_vae, publishes its best checkpoint in
its repository but no licence, so vae-lab does not redistribute it: a user downloads it once to
``weights/2018/`` (a folder of its own, so ``make train``, which writes the same file name to
``weights/``, never mixes the two). ``VAE_LAB_2018_CHECKPOINT`` points elsewhere.
"""
from __future__ import annotations

import os

from core.errors import VaeLabError

NAME = "fmnist_fc_conv_l10_rebalance_no_norm_best.pth.tar"
PROJECT = "https://github.com/snakers4/playing_with_vae"
COMMIT = "c8a614df9e2d1cc73e013531fc97f85d1c5122c3"  # "Reupload the files", 2018-07-07: the file's only version
URL = f"https://raw.githubusercontent.com/snakers4/playing_with_vae/{COMMIT}/weights/{NAME}"
SHA256 = "cf91ba8589df865004c55beccac68bce8cd8680a0635a0f95e95441b679be6b9"
ENV = "VAE_LAB_2018_CHECKPOINT"
DEFAULT = os.path.join("weights", "2018", NAME)  # relative to the repository root, as the docs write it
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checkpoint_2018() -> str:
    """Where the 2018 checkpoint is expected: ``$VAE_LAB_2018_CHECKPOINT``, else ``weights/2018/`` in the repository."""
    return os.environ.get(ENV) or os.path.join(ROOT, DEFAULT)


def where_to_get(path: str = DEFAULT) -> str:
    """One line: the command that downloads the 2018 checkpoint to ``path``."""
    return f"curl -L --create-dirs -o {path} {URL}  (the 2018 project's published checkpoint, {PROJECT})"


def missing_hint(path: str) -> str:
    """For a missing checkpoint file: how to get it when it is the 2018 one (by its name), else ''."""
    if os.path.basename(path) != NAME:
        return ""
    return f"; the 2018 project publishes a file of that name: {where_to_get(path)}"


def require_checkpoint_2018(path: str) -> str:
    """``path`` if it is a file, else a one-line VaeLabError that says where to get it."""
    if not os.path.isfile(path):
        raise VaeLabError(f"the 2018 checkpoint {path!r} is absent; get it with: {where_to_get(path)}, or set {ENV}")
    return path
