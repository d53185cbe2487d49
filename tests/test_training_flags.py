"""The model and training flags beyond 2018: resconv, --conditional, KL warm-up, free bits, bce_ssim,
cosine LR (their resume: test_resume.py; --preset: test_presets.py)."""
import os

import pytest
import torch

import train
from helpers import assert_cli_error, load_ckpt, make_objective, read_events, run_cli, small_args
from losses import bce_loss, kl_divergence, kl_per_dimension, reconstruction_loss, ssim_loss
from models import MODELS, ModelConfig, build_model
from runtime import optim

# ---------------------------------------------------------------- models


@pytest.mark.parametrize("model_type", sorted(name for name, family in MODELS.items() if not family.plain_only))
def test_conditional_models_use_the_class_in_encoder_and_decoder(model_type):
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_type=model_type, conditional=True, latent_space_size=6)).eval()
    x, z = torch.rand(4, 1, 28, 28), torch.randn(4, 6)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.full((4,), 7)
    torch.nn.init.normal_(model.label_embedding.weight)  # starts random anyway; make the effect large
    out = model(x, y=y0)
    logits, mu, logvar = out.logits, out.mu, out.logvar
    assert logits.shape == (4, 1, 28, 28) and mu.shape == (4, 6) and logvar.shape == (4, 6)
    assert not torch.allclose(model.encode(x, y0)[0], model.encode(x, y1)[0])
    assert not torch.allclose(model.decode(z, y0), model.decode(z, y1))
    with pytest.raises(ValueError, match="class labels"):
        model.decode(z)


def test_conditional_fc_encoder_equals_one_hot_input():
    """label_bias is the one-hot fed as extra inputs of the first layer: check against that."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_type="fc", conditional=True, latent_space_size=3))
    x, y = torch.rand(5, 1, 28, 28), torch.tensor([0, 3, 9, 3, 1])
    w = torch.cat([model.fc1.weight, model.label_embedding.weight], dim=1)  # (400, 784 + 10)
    inp = torch.cat([x.flatten(1), torch.nn.functional.one_hot(y, 10).float()], dim=1)
    h = torch.relu(inp @ w.t() + model.fc1.bias)
    assert torch.allclose(model.encode(x, y)[0], model.fc21(h), atol=1e-5)


def test_resconv_parameter_count_scales_with_the_multiplier():
    n = [sum(p.numel() for p in build_model(ModelConfig(model_type="resconv", model_multiplier=m)).parameters())
         for m in (1, 2)]
    assert 1.0e6 < n[0] < 3.0e6 and n[1] > 1.5 * n[0], n


# ---------------------------------------------------------------- losses


def test_free_bits_floor_each_dimension_and_stop_its_gradient():
    mu = torch.tensor([[0.0, 2.0, 0.1], [0.0, 2.0, -0.1]], requires_grad=True)
    logvar = torch.zeros(2, 3, requires_grad=True)
    kl_dims = kl_per_dimension(mu, logvar)
    assert torch.allclose(kl_dims, torch.tensor([0.0, 2.0, 0.005]))
    assert torch.allclose(kl_dims.sum(), kl_divergence(mu, logvar))
    loss_fn = make_objective(free_bits=0.5)
    logits, x = torch.zeros(2, 1, 28, 28), torch.full((2, 1, 28, 28), 0.5)
    terms = loss_fn.loss(logits, x, mu, logvar)
    assert terms["kl_loss"].item() == pytest.approx(2.005)
    assert terms["kl_penalty"].item() == pytest.approx(0.5 + 2.0 + 0.5)
    terms["loss"].backward()
    assert mu.grad[:, 0].abs().sum() == 0 and mu.grad[:, 2].abs().sum() == 0  # under the floor
    assert mu.grad[:, 1].abs().sum() > 0


def test_kl_scale_multiplies_only_the_kl_term():
    torch.manual_seed(0)
    logits, x = torch.randn(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4)
    loss_fn = make_objective(kl_loss_weight=2.0)
    terms = loss_fn.loss(logits, x, mu, logvar, kl_scale=0.25)
    assert terms["loss"].item() == pytest.approx((bce_loss(logits, x) + 0.5 * kl_divergence(mu, logvar)).item(),
                                                 rel=1e-6)
    assert terms["kl_weight"].item() == 0.5
    assert loss_fn.validation_loss(terms["img_loss"], terms["kl_loss"]).item() == pytest.approx(
        (bce_loss(logits, x) + 2.0 * kl_divergence(mu, logvar)).item(), rel=1e-6)


def test_bce_ssim_is_the_weighted_sum():
    torch.manual_seed(0)
    logits, x = torch.randn(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    mixed = reconstruction_loss("bce_ssim", logits, x, 5, ssim_weight=0.3)
    assert mixed.item() == pytest.approx((bce_loss(logits, x) + 0.3 * ssim_loss(logits, x, 5)).item(), rel=1e-6)


def test_kl_warmup_scale_is_linear_per_step():
    warm = make_objective(kl_warmup_epochs=2.0)  # progress: epochs done, (epoch, batch of 10) below
    assert warm.kl_scale(0 + 0 / 10) == 0.0
    assert warm.kl_scale(0 + 5 / 10) == 0.25
    assert warm.kl_scale(1 + 5 / 10) == 0.75
    assert warm.kl_scale(2 + 0 / 10) == 1.0 and warm.kl_scale(5 + 3 / 10) == 1.0
    assert make_objective().kl_scale(0.0) == 1.0


def test_cosine_schedule_closed_form():
    args = train.get_args_parser().parse_args(["--lr_schedule", "cosine", "--epochs", "10", "--lr", "0.002"])
    assert optim.lr_at(args, 0) == 0.002
    assert optim.lr_at(args, 5) == pytest.approx(0.001)
    assert optim.lr_at(args, 10) == pytest.approx(0.0, abs=1e-12)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.lr)
    sched = optim.make_scheduler(opt, args)
    for epoch in range(1, 10):
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(optim.lr_at(args, epoch))


# ---------------------------------------------------------------- --preset


# ---------------------------------------------------------------- end to end


def test_resconv_with_kl_controls_learns_and_logs_them(fmnist_small, workdir):
    code, out, err = run_cli(small_args(fmnist_small, "--model_type", "resconv", "--kl_warmup_epochs", "1",
                                        "--free_bits", "0.25", "--lr_schedule", "cosine", epochs=3, name="q"))
    assert code == 0, err
    ck = load_ckpt("weights/q_checkpoint.pth.tar")
    val = [h["val_loss"] for h in ck["history"]]
    assert val[-1] < val[0] - 5, val
    ev = read_events("tb_logs/q")
    w = [v for _, v in ev["train_kl_weight"]]
    assert w[0] == 0.0 and w[18] == pytest.approx(18 / 19) and w[19:] == [1.0] * len(w[19:])
    pen, kl = [v for _, v in ev["train_kl_penalty"]], [v for _, v in ev["train_kl_loss"]]
    assert all(p >= k - 1e-4 for p, k in zip(pen, kl)) and min(pen) >= 0.25 * 10 - 1e-4
    lrs = [h["lr"] for h in ck["history"]]
    assert lrs == pytest.approx([1e-3, 1e-3 * 0.75, 1e-3 * 0.25])


def test_bce_ssim_run_trains(fmnist_small, workdir):
    code, out, err = run_cli(small_args(fmnist_small, "--image_loss_type", "bce_ssim", "--ssim_weight", "0.5",
                                   "--tensorboard_images", "False", epochs=2, name="q"))
    assert code == 0, err
    hist = load_ckpt("weights/q_checkpoint.pth.tar")["history"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"] and hist[-1]["val_ssim"] > hist[0]["val_ssim"]
    # the reported img_loss is the mixed loss: above the pure BCE of the same epoch's eval
    assert hist[-1]["val_img_loss"] > 100


def test_conditional_run_draws_class_grids_and_resumes(fmnist_small, workdir):
    code, out, err = run_cli(small_args(fmnist_small, "--conditional", "True", "--model_type", "fc", epochs=2,
                                        name="q"))
    assert code == 0, err
    hist = load_ckpt("weights/q_checkpoint.pth.tar")["history"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    ev = read_events("tb_logs/q")
    assert ev["image:class_samples"][0][1] == 2 and ev["image:samples"][0][1] == 2
    ck = "weights/q_checkpoint.pth.tar"
    code, out, err = run_cli(small_args(fmnist_small, "--model_type", "fc", "--resume", ck, "--epochs", "3",
                                   "--conditional", "False", epochs=2, name="q"))
    assert_cli_error(code, err, "--conditional True")
    code, out, err = run_cli(small_args(fmnist_small, "--conditional", "True", "--model_type", "fc", "--resume", ck,
                                   "--epochs", "3", epochs=2, name="q"))
    assert code == 0, err
    code, out, err = run_cli(["--data_root", fmnist_small, "--model_type", "fc", "--conditional", "True",
                              "--resume", ck, "--predict", "--evaluate", "--lognumber", "q", "--no_cuda", "True"])
    assert code == 0, err
    assert os.path.getsize("results/q/class_samples.png") > 1000
    from PIL import Image
    w, h = Image.open("results/q/class_samples.png").size
    assert (w, h) == (8 * 30 + 2, 10 * 30 + 2)  # 8 columns of styles, 10 rows of classes


def test_warmup_with_running_mean_is_refused(workdir):
    code, out, err = run_cli(["--kl_warmup_epochs", "2", "--do_running_mean", "True"])
    assert_cli_error(code, err, "--kl_warmup_epochs")


def test_compare_embeddings_refuses_a_conditional_checkpoint(tmp_path):
    from core.errors import VaeLabError
    from evaluation.embeddings import load_vae
    from runtime.checkpoints import save_checkpoint

    cfg = ModelConfig(model_type="fc", conditional=True)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters())
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [40, 50])
    path = str(tmp_path / "cvae.pth.tar")
    save_checkpoint({"epoch": 1, "state_dict": model.state_dict(), "model_config": cfg.to_dict(),
                     "args": {"dataset_type": "fmnist"}, "best_loss": 1.0, "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict()}, path)
    with pytest.raises(VaeLabError, match="conditional VAE"):
        load_vae(path, "fmnist")
