"""--objective capacity, betatc and factorvae (losses/capacity.py, betatc.py, factorvae.py): their terms
against closed forms, training on a factor data set with the terms in TensorBoard and the checkpoint,
FactorVAE's discriminator resumed exactly, and one line when a checkpoint lacks it."""
import math
import types

import pytest
import torch

from helpers import assert_cli_error, load_ckpt, make_objective, read_events, run_cli
from losses import Batch, kl_divergence
from losses.betatc import tc_decomposition
from losses.capacity import capacity_at, capacity_penalty
from losses.factorvae import discriminator_loss, discriminator_tc, permute_dims
from models.base import ModelOutput


def test_capacity_grows_linearly_then_stays():
    assert capacity_at(25.0, 2.0, 0.0) == 0.0  # progress: epochs done
    assert capacity_at(25.0, 2.0, 1.0) == pytest.approx(12.5)
    assert capacity_at(25.0, 2.0, 1.5) == pytest.approx(18.75)
    assert capacity_at(25.0, 2.0, 5.3) == 25.0
    assert float(capacity_penalty(torch.tensor(3.0), 5.0, 1000.0)) == pytest.approx(2000.0)
    assert float(capacity_penalty(torch.tensor(7.0), 5.0, 1000.0)) == pytest.approx(2000.0)


def test_tc_terms_sum_to_the_sampled_kl_and_vanish_where_they_must():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(64, 5, generator=g), torch.randn(64, 5, generator=g) * 0.3 - 1
    z = mu + torch.randn(64, 5, generator=g) * torch.exp(0.5 * logvar)
    t = tc_decomposition(z, mu, logvar, dataset_size=10_000)
    log_q = (-0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / logvar.exp())).sum(1)
    log_p = (-0.5 * (math.log(2 * math.pi) + z ** 2)).sum(1)
    assert float(t["mi"] + t["tc"] + t["dim_kl"]) == pytest.approx(float((log_q - log_p).mean()), abs=1e-4)
    # every image with one posterior and the batch the whole data set: q(z) = q(z|x), a product of
    # its dimensions' Gaussians, so MI = TC = 0 and the dimension-wise KL is the whole (sampled) KL
    same_mu, same_lv = mu[:1].expand(64, 5), logvar[:1].expand(64, 5)
    zs = same_mu + torch.randn(64, 5, generator=g) * torch.exp(0.5 * same_lv)
    t = tc_decomposition(zs, same_mu, same_lv, dataset_size=64)
    assert abs(float(t["mi"])) < 1e-4 and abs(float(t["tc"])) < 1e-4
    # codes that copy one dimension into another are totally correlated: TC well above independent codes'
    sharp = torch.full((256, 2), -6.0)
    indep = torch.randn(256, 2, generator=g)
    copied = torch.cat([indep[:, :1], indep[:, :1]], 1)
    tc_indep = float(tc_decomposition(indep, indep, sharp, 256)["tc"])
    tc_copied = float(tc_decomposition(copied, copied, sharp, 256)["tc"])
    assert tc_copied > tc_indep + 1.0


def test_permuted_codes_keep_each_marginal_and_lose_the_pairing():
    z = torch.arange(200.0).reshape(100, 2)
    p = permute_dims(z, torch.Generator().manual_seed(1))
    for j in range(2):
        assert torch.equal(p[:, j].sort().values, z[:, j])
    assert not torch.equal(p[:, 1] - p[:, 0], z[:, 1] - z[:, 0])


def test_discriminator_terms():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    assert float(discriminator_tc(logits)) == pytest.approx(0.5)  # mean log D/(1-D)
    sure = torch.tensor([[20.0, -20.0]]), torch.tensor([[-20.0, 20.0]])
    assert float(discriminator_loss(*sure)) < 1e-6
    assert float(discriminator_loss(sure[1], sure[0])) > 10


def test_objectives_on_the_elbo_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 4, 4, generator=g).round()
    logits, mu, logvar = torch.randn(8, 1, 4, 4, generator=g), torch.randn(8, 3, generator=g), torch.zeros(8, 3)
    model = types.SimpleNamespace(log_scale=None, noise_size=3, analytic_kl=True, level_names=())

    def forward(x, eps=None, y=None, with_kl=False):  # a model's fixed output, its code at the given noise
        return ModelOutput(logits, mu, logvar, mu if eps is None else mu + eps)

    batch = Batch(x, None, None)
    elbo, _ = make_objective().step(model, forward, batch, 0.0)
    # at 1 epoch of 1, C is --capacity_max
    cap = make_objective(objective="capacity", capacity_weight=10.0, capacity_max=1.0, capacity_epochs=1.0)
    t, _ = cap.step(model, forward, batch, 1.0)
    kl = kl_divergence(mu, logvar)
    assert float(t["kl_loss"]) == pytest.approx(float(kl), rel=1e-5) and float(t["capacity"]) == 1.0
    assert float(t["loss"]) == pytest.approx(float(elbo["img_loss"] + 10 * (kl - 1).abs()), rel=1e-5)
    tc, _ = make_objective(model, 100, objective="betatc", tc_weight=1.0).step(model, forward, batch, 0.0)
    # beta = 1: the loss is reconstruction + the sampled KL
    assert float(tc["loss"]) == pytest.approx(float(tc["img_loss"] + tc["mi"] + tc["tc"] + tc["dim_kl"]), rel=1e-5)


def _args(name, epochs, *extra):
    return ["--dataset_type", "dsprites", "--factor_images", "700", "--model_type", "fc", "--latent_space_size",
            "4", "--epochs", str(epochs), "--batch-size", "100", "--print-freq", "2", "--lognumber", name,
            "--no_cuda", "True", "--tensorboard_images", "False", "--data_root", "data", *extra]


@pytest.mark.parametrize("objective, terms", [("capacity", ["capacity"]), ("betatc", ["mi", "tc", "dim_kl"])])
def test_objective_trains_with_its_terms_logged_and_saved(objective, terms, workdir):
    code, _, err = run_cli(_args("o", 1, "--objective", objective))
    assert code == 0, err
    tb = read_events("tb_logs/o")
    ckpt = load_ckpt("weights/o_checkpoint.pth.tar")
    for term in terms:
        assert len(tb[f"train_{term}"]) == 5 and math.isfinite(tb[f"train_{term}"][-1][1])  # 480 images / 100
        assert f"train_{term}" in ckpt["history"][-1]
    assert ckpt["args"]["objective"] == objective
    if objective == "capacity":  # --capacity_max 25 over 1 epoch of 5 steps
        assert [v for _, v in tb["train_capacity"]] == pytest.approx([0, 5, 10, 15, 20])


def test_factorvae_resumes_its_discriminator_exactly(workdir):
    flags = ("--objective", "factorvae", "--tc_weight", "10", "--disc_units", "64")
    assert run_cli(_args("straight", 2, *flags))[0] == 0
    assert run_cli(_args("split", 1, *flags))[0] == 0
    code, _, err = run_cli(_args("split", 2, *flags, "--resume", "weights/split_checkpoint.pth.tar"))
    assert code == 0, err
    a, b = load_ckpt("weights/straight_checkpoint.pth.tar"), load_ckpt("weights/split_checkpoint.pth.tar")
    for part in ("state_dict", "discriminator"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for s, t in zip(a["disc_optimizer"]["state"].values(), b["disc_optimizer"]["state"].values()):
        assert all(torch.equal(s[k], t[k]) for k in s)
    assert "train_disc_loss" in a["history"][-1] and "train_tc" in read_events("tb_logs/split")
    # an ELBO checkpoint has no discriminator to resume
    assert run_cli(_args("elbo", 1))[0] == 0
    code, _, err = run_cli(_args("elbo", 2, *flags, "--resume", "weights/elbo_checkpoint.pth.tar"))
    assert_cli_error(code, err, "no FactorVAE discriminator", "--objective elbo")
    assert load_ckpt("weights/elbo_checkpoint.pth.tar")["epoch"] == 1  # untouched
