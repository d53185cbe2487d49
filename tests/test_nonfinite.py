"""NaN and Inf in training: caught at their step, nothing saved; --grad_clip; logvar clamp."""
import math

import pytest
import torch

from helpers import TINY_BATCHES, assert_cli_error, load_ckpt, read_events, run_cli, snapshot, temp_files, tiny_args

# ------------------------------------------------------------------ non-finite values


def poison_forward(monkeypatch, at_call: int, where: str):
    """Make the ``at_call``-th training forward pass produce a NaN loss or an Inf gradient."""
    from models.base import VAE

    real, calls = VAE.forward, []

    def forward(self, x, eps=None, y=None, with_kl=False):
        out = real(self, x, eps, y, with_kl=with_kl)
        if self.training:
            calls.append(1)
            if len(calls) == at_call:
                if where == "loss":
                    out.logits = out.logits * float("nan")
                else:  # finite forward, infinite backward
                    out.logits.register_hook(lambda g: g * float("inf"))
        return out

    monkeypatch.setattr(VAE, "forward", forward)


@pytest.mark.parametrize("where,needle", [("loss", "non-finite loss"), ("grad", "non-finite gradient")])
def test_non_finite_value_stops_at_its_step_and_saves_nothing(tiny_mnist, one_good_epoch, monkeypatch,
                                                              where, needle):
    # Resume for epoch 2 and poison its 3rd minibatch: global step TINY_BATCHES + 2. --print-freq 100
    # means the check runs only at the end of the epoch; it must still name the exact step.
    poison_forward(monkeypatch, 3, where)
    code, out, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/r_checkpoint.pth.tar", epochs=2))
    assert_cli_error(code, err, needle, f"at epoch 2, global step {TINY_BATCHES + 2} ", "--lr")
    assert snapshot(*one_good_epoch) == one_good_epoch  # checkpoint and best untouched
    assert temp_files() == []
    # TensorBoard got the steps before the bad one, and no epoch-2 summary
    tb = read_events("tb_logs/r")
    assert [s for s, _ in tb["train_loss"]] == list(range(TINY_BATCHES + 2))
    assert [s for s, _ in tb["eph_val_loss"]] == [1]


def test_grad_norm_is_measured_and_clipped():
    from runtime.nonfinite import grad_norm_and_clip

    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    a.grad, b.grad = torch.full((3,), 3.0), torch.full((4,), 2.0)  # norm sqrt(27 + 16)
    assert grad_norm_and_clip([a, b], 0.0).item() == pytest.approx(math.sqrt(43))
    assert torch.equal(a.grad, torch.full((3,), 3.0))  # 0: no clipping
    assert grad_norm_and_clip([a, b], 1.0).item() == pytest.approx(math.sqrt(43))  # the norm before
    assert torch.cat([a.grad, b.grad]).norm().item() == pytest.approx(1.0, rel=1e-5)
    b.grad[0] = float("inf")
    assert not math.isfinite(grad_norm_and_clip([a, b], 0.0).item())


def test_grad_clip_flag_clips_the_update(tiny_mnist, workdir):
    assert run_cli(tiny_args(tiny_mnist, name="free"))[0] == 0
    code, _, err = run_cli(tiny_args(tiny_mnist, "--grad_clip", "0.5", name="clip"))
    assert code == 0, err
    free, clip = load_ckpt("weights/free_checkpoint.pth.tar"), load_ckpt("weights/clip_checkpoint.pth.tar")
    assert clip["history"][0]["train_grad_norm"] > 0.5  # logged norm is the one before clipping
    assert not torch.equal(free["state_dict"]["fc1.weight"], clip["state_dict"]["fc1.weight"])
    assert "train_grad_norm" in read_events("tb_logs/clip")
    code, _, err = run_cli(tiny_args(tiny_mnist, "--grad_clip", "-1", name="bad"))
    assert_cli_error(code, err, "--grad_clip")


@pytest.mark.parametrize("model_type", ["fc", "fc_conv", "fcn", "resconv"])
def test_logvar_is_clamped_so_kl_and_gradients_stay_finite(model_type):
    from helpers import make_objective
    from models import ModelConfig, build_model
    from models.base import LOGVAR_MAX, LOGVAR_MIN

    model = build_model(ModelConfig(model_type=model_type, latent_space_size=4))
    x = torch.rand(8, 1, 28, 28)
    real_encode = model.encode
    for extreme in (1e4, -1e4):
        model.encode = lambda x, y=None, extreme=extreme: (real_encode(x)[0], torch.full((x.shape[0], 4), extreme))
        out = model(x)
        logits, mu, logvar = out.logits, out.mu, out.logvar
        assert logvar.max().item() <= LOGVAR_MAX and logvar.min().item() >= LOGVAR_MIN
        terms = make_objective().loss(logits, x, mu, logvar)
        terms["loss"].backward()
        assert math.isfinite(terms["kl_loss"].item())
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad()
        del model.encode




@pytest.mark.parametrize("what", ["weights", "validation"])
def test_non_finite_after_the_last_step_of_an_epoch_saves_nothing(tiny_mnist, one_good_epoch, monkeypatch, what):
    # The last update of an epoch has no next loss to show its damage: the epoch-end check does.
    import train

    real_train, real_validate = train.train_one_epoch, train.validate

    def train_then_break(model, *a, **k):
        out = real_train(model, *a, **k)
        if what == "weights":
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("inf")
        return out

    def validate_nan(*a, **k):
        return {**real_validate(*a, **k), "loss": float("nan")}

    monkeypatch.setattr(train, "train_one_epoch", train_then_break)
    if what == "validation":
        monkeypatch.setattr(train, "validate", validate_nan)
    code, _, err = run_cli(tiny_args(tiny_mnist, "--resume", "weights/r_checkpoint.pth.tar", epochs=2))
    needle = (f"non-finite weights after global step {2 * TINY_BATCHES - 1}, the last of epoch 2"
              if what == "weights" else "non-finite validation loss nan at epoch 2")
    assert_cli_error(code, err, needle)
    assert snapshot(*one_good_epoch) == one_good_epoch
