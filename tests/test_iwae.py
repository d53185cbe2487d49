"""evaluation/likelihood.py: the IWAE bound against the ELBO, its tightening with K, chunking, the CLI."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from evaluation.likelihood import DECODED_PER_PASS, iwae_evaluate, iwae_nll
from helpers import assert_cli_error, load_ckpt, run_cli, tiny_args
from models import VAE


@pytest.fixture(scope="module")
def toy(fmnist_root):
    """An `fc` VAE (latent 10) trained for 300 steps on 1000 Fashion-MNIST images, and 100 others."""
    from datasets import DATASETS
    from helpers import make_objective
    from models import ModelConfig, build_model

    images = DATASETS["fmnist"](fmnist_root, train=True).data[:1100].float().div(255).unsqueeze(1)
    train_x, x = images[:1000], images[1000:]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(ModelConfig(model_type="fc", latent_space_size=10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = make_objective()
        for step in range(300):
            xb = train_x[(step % 10) * 100:(step % 10 + 1) * 100]
            out = model(xb)
            loss = loss_fn.loss(out.logits, xb, out.mu, out.logvar)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), x


def negative_elbo(model, x, draws, seed):
    """Per-image BCE + KL with the BCE averaged over ``draws`` posterior samples (analytic KL)."""
    from losses import kl_divergence

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        bce = torch.zeros(x.shape[0], dtype=torch.float64)
        for _ in range(draws):
            z = mu + torch.randn(mu.shape, generator=g) * torch.exp(0.5 * logvar)
            bce += F.binary_cross_entropy_with_logits(model.decode_logits(z), x, reduction="none").flatten(1).sum(1)
        kl = torch.stack([kl_divergence(m[None], lv[None]) for m, lv in zip(mu, logvar)])
    return bce / draws + kl


def test_k1_is_the_one_sample_elbo_and_averages_to_bce_plus_kl(toy):
    from losses import kl_divergence

    model, x = toy
    x = x[:8]
    # Draw by draw: -log p(x|z) - log p(z) + log q(z|x) for the noise iwae_nll draws (one (B, z)
    # draw per sample), computed here with torch.distributions.
    bound = iwae_nll(model, x, 1, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mu, logvar = model.encode(x)
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
        bce = F.binary_cross_entropy_with_logits(model.decode_logits(z), x, reduction="none").flatten(1).sum(1)
        expected = bce - Normal(0.0, 1.0).log_prob(z).sum(1) + Normal(mu, std).log_prob(z).sum(1)
    torch.testing.assert_close(bound, expected, rtol=1e-5, atol=1e-3)

    # Averaged over 2000 draws: E_q[BCE] + KL (analytic), within Monte-Carlo error. The draws'
    # (log q - log p) terms average to the KL; the same draws' BCE is on both sides.
    n = 2000
    reps = x.repeat(n, 1, 1, 1)  # row j * 8 + i is image i
    g = torch.Generator().manual_seed(4)
    bounds = iwae_nll(model, reps, 1, generator=g).view(n, 8)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        mu, logvar = model.encode(reps)
        z = mu + torch.randn(mu.shape, generator=g) * torch.exp(0.5 * logvar)
        bce = F.binary_cross_entropy_with_logits(model.decode_logits(z), reps, reduction="none")
        bce = bce.flatten(1).sum(1).view(n, 8)
        kl = torch.stack([kl_divergence(mu[i:i + 1], logvar[i:i + 1]) for i in range(8)])
    diff = bounds - bce  # log q - log p per draw, mean KL
    se = diff.std(0) / math.sqrt(n)
    assert ((diff.mean(0) - kl).abs() < 4 * se).all(), (diff.mean(0), kl, se)
    # Looser, against an independent ELBO estimate with other draws.
    elbo = negative_elbo(model, x, n, seed=5)
    assert bounds.mean(0).double() == pytest.approx(elbo, abs=1.0)


def test_the_bound_tightens_with_k_and_stays_below_the_elbo(toy):
    model, x = toy
    elbo = negative_elbo(model, x, 200, seed=1)
    per_image = [iwae_nll(model, x, k, generator=torch.Generator().manual_seed(2)) for k in (1, 10, 100)]
    b1, b10, b100 = (b.mean().item() for b in per_image)
    assert b1 > b10 > b100, (b1, b10, b100)
    # K=1 is a one-draw estimate of the negative ELBO: equal within 4 standard errors.
    diff = per_image[0].double() - elbo
    assert abs(diff.mean().item()) < 4 * diff.std().item() / math.sqrt(len(x)), (b1, elbo.mean())
    assert b10 < elbo.mean() - 0.5 and b100 < b10 - 0.5, (elbo.mean(), b10, b100)


def test_chunking_does_not_change_the_value_and_bounds_memory(toy):
    model, x = toy
    x = x[:50]
    values = [iwae_nll(model, x, 37, chunk=c, generator=torch.Generator().manual_seed(7)) for c in (37, 5, 1, None)]
    for v in values[1:]:
        torch.testing.assert_close(v, values[0], rtol=1e-6, atol=1e-4)

    rows = []
    decode = model.decode_logits

    def spy(z, y=None):
        rows.append(z.shape[0])
        return decode(z, y)

    model.decode_logits = spy
    try:
        iwae_nll(model, x, 400, generator=torch.Generator().manual_seed(7))
    finally:
        del model.decode_logits
    assert max(rows) <= DECODED_PER_PASS and sum(rows) == 400 * 50


def test_dataset_bound_is_seeded_and_leaves_the_global_rng_alone(toy):
    from datasets import Split

    model, x = toy
    data = Split(x, torch.arange(len(x)) % 10)
    before = torch.get_rng_state()
    a = iwae_evaluate(model, data, torch.device("cpu"), 20, batch_size=32, seed=1)
    b = iwae_evaluate(model, data, torch.device("cpu"), 20, batch_size=32, seed=1)
    c = iwae_evaluate(model, data, torch.device("cpu"), 20, batch_size=32, seed=2)
    assert torch.equal(torch.get_rng_state(), before)
    assert a == b and a != c and abs(a - c) < 2.0


class Conditional(torch.nn.Module):
    """A stand-in conditional VAE: checks that every call gets the labels of its rows."""

    def __init__(self, model, labels):
        super().__init__()
        self.model, self.labels = model, labels
        self.likelihood, self.log_scale = model.likelihood, model.log_scale  # the wrapped model's p(x|z)
        self.noise_size, self.prior = model.noise_size, model.prior

    # the real bookkeeping of the codes, calling this stand-in's decode_logits
    importance_terms, code_log_ratio, decode_given = VAE.importance_terms, VAE.code_log_ratio, VAE.decode_given

    def posterior(self, x, y):
        assert torch.equal(y, self.labels)
        return self.model.posterior(x)

    def decode_logits(self, z, y):
        assert torch.equal(y, self.labels.repeat(z.shape[0] // len(self.labels)))
        return self.model.decode_logits(z)


def test_labels_go_to_a_conditional_model(toy):
    model, x = toy
    x, y = x[:6], torch.tensor([3, 1, 4, 1, 5, 9])
    with_y = iwae_nll(Conditional(model, y), x, 10, chunk=3, y=y, generator=torch.Generator().manual_seed(0))
    without = iwae_nll(model, x, 10, chunk=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(with_y, without)


def test_cli_writes_the_bound_into_the_eval_json(tiny_mnist, one_good_epoch):
    from datasets import train_val_split
    from models import ModelConfig, build_model

    ckpt = "weights/r_checkpoint.pth.tar"
    code, out, err = run_cli(tiny_args(tiny_mnist, "--resume", ckpt, "--evaluate"))
    assert code == 0, err
    plain = json.load(open("weights/r_eval.json"))
    code, out, err = run_cli(tiny_args(tiny_mnist, "--resume", ckpt, "--evaluate", "--iw_samples", "5"))
    assert code == 0, err
    res = json.load(open("weights/r_eval.json"))
    assert "IWAE K=5" in out and "IWAE bound" in out
    for split in ("val", "test"):
        assert res[split]["iw_samples"] == 5
        assert math.isfinite(res[split]["iwae_nll"])
        assert {k: v for k, v in res[split].items() if k not in ("iwae_nll", "iw_samples")} == plain[split]
    # The same number as the library function on the same images and seed.
    ck = load_ckpt(ckpt)
    model = build_model(ModelConfig(**ck["model_config"]))
    model.load_state_dict(ck["state_dict"])
    _, val = train_val_split("mnist", tiny_mnist, 0, 5, 42)
    assert res["val"]["iwae_nll"] == pytest.approx(iwae_evaluate(model, val, torch.device("cpu"), 5, seed=42),
                                                   rel=1e-12)


@pytest.mark.parametrize("argv,needle", [(["--iw_samples", "5"], "--iw_samples needs --evaluate"),
                                         (["--iw_samples", "-1"], "--iw_samples"),
                                         (["--iw_samples", "many"], "--iw_samples")])
def test_bad_iw_samples_is_one_line_and_exit_2(argv, needle, workdir):
    code, _, err = run_cli(argv)
    assert_cli_error(code, err, needle)
