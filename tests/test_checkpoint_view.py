"""The typed checkpoint view (core/checkpoint.py): what train.py writes reads back as written, and the 2018
checkpoint reads as the published model."""
import torch

from core.checkpoint import LEGACY_KEYS
from helpers import load_ckpt
from runtime.checkpoints import load_checkpoint


def same(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


def test_a_written_checkpoint_reads_back_as_written(one_good_epoch):
    path = "weights/r_checkpoint.pth.tar"
    raw, ckpt = load_ckpt(path), load_checkpoint(path)
    assert same(ckpt.to_dict(), raw)  # every key, in the order written, every value and its type
    assert not ckpt.legacy and ckpt.epoch == 1 and [h["epoch"] for h in ckpt.history] == [1]
    assert ckpt.best_loss == raw["best_loss"] == ckpt.history[0]["val_loss"]
    assert ckpt.trained_with("lognumber") == "r" and ckpt.model_setting("model_type") == raw["args"]["model_type"]
    assert ckpt.image_shape == (1, 28, 28) and ckpt.entries == {}  # the default objective keeps nothing of its own


def test_the_2018_checkpoint_reads_as_the_published_model(reference_ckpt):
    ckpt = load_checkpoint(reference_ckpt)
    assert ckpt.legacy and ckpt.model_config is None and ckpt.history == [] and ckpt.global_step is None
    assert ckpt.image_shape == (1, 28, 28) and ckpt.model_setting("likelihood") == "bernoulli"
    assert ckpt.trained_with("lognumber") is None and ckpt.trained_with("optimizer", "adam") == "adam"
    assert sorted(ckpt.to_dict()) == sorted(LEGACY_KEYS) == sorted(load_ckpt(reference_ckpt))
