"""--iw_train K: training on the importance-weighted bound (IWAE) instead of the ELBO."""
import pytest
import torch

from helpers import assert_cli_error, load_ckpt, make_objective, run_cli, tiny_args
from losses.iwae import iw_terms
from models import ModelConfig, build_model


def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(model_type="fc", latent_space_size=2, image_size=4)).train()


def test_one_sample_is_the_elbo_and_more_samples_bound_it_below():
    model, x = tiny_model(), torch.rand(8, 1, 4, 4)
    terms, logits = iw_terms(model, x, None, 1)
    assert terms["loss"] == terms["elbo"] and logits.shape == x.shape
    torch.manual_seed(1)
    terms, _ = iw_terms(model, x, None, 50)
    assert terms["loss"] < terms["elbo"]  # Jensen: logsumexp - log K >= the mean, per image


def test_one_sample_iwae_gradients_are_the_elbo_gradients_in_expectation():
    """K = 1 estimates the ELBO's gradient without bias, as the analytic-KL loss does: averaged
    over many draws (one batch of copies of the same images) the two agree."""
    model, n = tiny_model(), 20000
    x = torch.rand(4, 1, 4, 4).repeat(n, 1, 1, 1)
    grads = []
    for objective in ("iwae", "elbo"):
        model.zero_grad()
        torch.manual_seed(2)
        if objective == "iwae":
            loss = iw_terms(model, x, None, 1)[0]["loss"]
        else:
            out = model(x)
            loss = make_objective().loss(out.logits, x, out.mu, out.logvar)["loss"]
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    iwae, elbo = grads
    assert (iwae - elbo).norm() < 0.03 * elbo.norm()


def test_a_run_trains_on_the_bound_logs_the_elbo_and_resumes_exactly(tiny_mnist, workdir):
    argv = tiny_args(tiny_mnist, "--model_type", "fc", "--iw_train", "5", "--image_loss_type", "logistic", epochs=2)
    code, out, err = run_cli(argv)
    assert code == 0, err
    assert "(IWAE K=5; ELBO" in out
    from tools.tb_reader import read_run

    assert "train_elbo" in read_run("tb_logs/r") and len(read_run("tb_logs/r/epoch")["eph_tr_elbo"]) == 2
    straight = load_ckpt("weights/r_checkpoint.pth.tar")
    for h in straight["history"]:
        assert h["train_loss"] <= h["train_elbo"]  # the bound is tighter than the ELBO of its samples
    assert straight["history"][1]["train_loss"] < straight["history"][0]["train_loss"]
    # one epoch, then a resume to two: the same weights (same data order, same noise)
    assert run_cli(tiny_args(tiny_mnist, "--model_type", "fc", "--iw_train", "5", "--image_loss_type", "logistic",
                             epochs=1, name="p"))[0] == 0
    assert run_cli(tiny_args(tiny_mnist, "--model_type", "fc", "--iw_train", "5", "--image_loss_type", "logistic",
                             "--resume", "weights/p_checkpoint.pth.tar", epochs=2, name="p"))[0] == 0
    resumed = load_ckpt("weights/p_checkpoint.pth.tar")
    assert all(torch.equal(resumed["state_dict"][k], v) for k, v in straight["state_dict"].items())


@pytest.mark.parametrize("extra, needle", [(["--do_running_mean", "True"], "--do_running_mean"),
                                          (["--image_loss_type", "ssim"], "--image_loss_type ssim"),
                                          (["--kl_warmup_epochs", "1"], "--kl_warmup_epochs"),
                                          (["--compile", "True"], "--compile"), (["--amp", "True"], "--amp")])
def test_what_the_bound_does_not_combine_with_is_one_line(extra, needle, workdir):
    code, _, err = run_cli(["--iw_train", "4", *extra])
    assert_cli_error(code, err, f"--iw_train 4 does not combine with {needle}")
