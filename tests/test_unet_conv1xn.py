"""The 2018 failed architectures: `unet` (skips across the bottleneck) and `conv1xn` (1xN / Nx1 pairs)."""
import pytest
import torch

from helpers import assert_cli_error, load_ckpt, run_cli, tiny_args
from models import ModelConfig, build_model
from models.unet import parse_skips


@pytest.mark.parametrize("skips", ["none", "coarsest", "all", "7,14", "28"])
def test_unet_shapes_for_every_skip_choice(skips):
    model = build_model(ModelConfig(model_type="unet", unet_skips=skips, latent_space_size=6))
    out = model(torch.rand(5, 1, 28, 28))
    logits, mu, logvar = out.logits, out.mu, out.logvar
    assert logits.shape == (5, 1, 28, 28) and mu.shape == logvar.shape == (5, 6)
    assert model.decode(torch.randn(3, 6)).shape == (3, 1, 28, 28)  # a code alone decodes too
    assert model.skips == parse_skips(skips)


def test_unet_without_skips_is_the_plain_conv_vae_layer_for_layer():
    torch.manual_seed(0)
    fcn = build_model(ModelConfig(model_type="fcn", split_filter=3))
    unet = build_model(ModelConfig(model_type="unet", unet_skips="none"))
    fcn_params, unet_params = list(fcn.parameters()), list(unet.parameters())
    assert [p.shape for p in fcn_params] == [p.shape for p in unet_params]
    with torch.no_grad():
        for a, b in zip(fcn_params, unet_params):
            b.copy_(a)
    x, eps = torch.rand(4, 1, 28, 28), torch.randn(4, 10)
    for mode in (fcn.train, fcn.eval):
        mode()
        unet.train(fcn.training)
        out_f, out_u = fcn(x, eps), unet(x, eps)
        for field in ("logits", "mu", "logvar", "z"):
            torch.testing.assert_close(getattr(out_u, field), getattr(out_f, field), rtol=0, atol=1e-6)


def test_skips_carry_the_input_past_the_code():
    x = torch.rand(4, 1, 28, 28)
    plain = build_model(ModelConfig(model_type="unet", unet_skips="none")).eval()
    skip = build_model(ModelConfig(model_type="unet", unet_skips="all")).eval()
    with torch.no_grad():
        # without skips the reconstruction is the decoded code; with them it is not
        torch.testing.assert_close(plain(x).logits, plain.decode_logits(plain(x).z))
        assert not torch.allclose(skip(x).logits, skip.decode_logits(skip(x).z))
        # the same code with another input's maps gives another picture: the skips carry the input
        mu = skip(x).mu
        torch.testing.assert_close(skip.decode_with_skips(x, mu), skip(x).logits)
        assert not torch.allclose(skip.decode_with_skips(x, mu), skip.decode_with_skips(torch.rand(4, 1, 28, 28), mu))
        # and without skips the maps change nothing
        torch.testing.assert_close(plain.decode_with_skips(x, mu), plain.decode_logits(mu))


def test_bad_skips_are_refused():
    assert parse_skips("14,7,14") == (7, 14)
    for bad in ("5", "7,9", "some", "7,"):
        with pytest.raises(ValueError, match="skips must be"):
            parse_skips(bad)


@pytest.mark.parametrize("n", [3, 5, 7])
def test_conv1xn_is_built_of_1xn_and_nx1_pairs(n):
    model = build_model(ModelConfig(model_type="conv1xn", conv_n=n))
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(1 in m.kernel_size for m in convs)
    assert {max(m.kernel_size) for m in convs} == {n, 7}  # N, and the 7x7 step to and from the code
    out = model(torch.rand(2, 1, 28, 28))
    logits, mu = out.logits, out.mu
    assert logits.shape == (2, 1, 28, 28) and mu.shape == (2, 10)


def test_train_predict_and_resume_rebuild_the_architecture(tiny_mnist, workdir):
    code, _, err = run_cli(tiny_args(tiny_mnist, "--model_type", "unet", "--unet_skips", "coarsest"))
    assert code == 0, err
    assert load_ckpt("weights/r_checkpoint.pth.tar")["model_config"]["unet_skips"] == "coarsest"
    # --predict rebuilds the skips from the checkpoint, whatever --unet_skips says
    code, _, err = run_cli(tiny_args(tiny_mnist, "--model_type", "unet", "--resume", "weights/r_best.pth.tar",
                                     "--predict"))
    assert code == 0, err
    code, _, err = run_cli(tiny_args(tiny_mnist, "--model_type", "conv1xn", "--conv_n", "5", name="c"))
    assert code == 0, err
    assert load_ckpt("weights/c_checkpoint.pth.tar")["model_config"]["conv_n"] == 5


@pytest.mark.parametrize("extra, needle", [
    (["--model_type", "unet", "--conditional", "True"], "--model_type unet supports neither"),
    (["--model_type", "conv1xn", "--normalize", "True"], "--model_type conv1xn supports neither"),
    (["--model_type", "unet", "--model_multiplier", "2"], "--model_multiplier"),
])
def test_unsupported_combinations_are_one_line(tiny_mnist, workdir, extra, needle):
    code, _, err = run_cli(tiny_args(tiny_mnist, *extra))
    assert_cli_error(code, err, needle)


def test_bad_flag_values_are_one_line(tiny_mnist, workdir):
    for argv in (["--unet_skips", "9"], ["--conv_n", "4"]):
        code, _, err = run_cli(tiny_args(tiny_mnist, *argv))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_the_skip_measurement_reads_the_ablation_checkpoints(tiny_mnist, workdir):
    """benchmarks/unet_skips.py on two 1-epoch unet runs: the numbers are consistent with the model."""
    import json
    import os

    from benchmarks import unet_skips
    from helpers import run_module_cli

    for skips in ("all", "none"):
        code, _, err = run_cli(tiny_args(tiny_mnist, "--model_type", "unet", "--unet_skips", skips,
                                         "--weights_dir", "abl", name=f"unet_skips_{skips}_s42"))
        assert code == 0, err
    code, out, err = run_module_cli(unet_skips, ["--work_dir", "abl", "--seeds", "42,1", "--data_root", tiny_mnist,
                                                 "--device", "cpu", "--out", "out/u", "--picture", "out/u.png"])
    assert code == 0, err
    rows = {r["row"]: r for r in json.load(open("out/u.json"))["rows"]}
    assert set(rows) == {"unet_skips_all", "unet_skips_none"}  # coarsest was not run; seed 1 neither
    none, every = rows["unet_skips_none"], rows["unet_skips_all"]
    assert none["seeds"] == [42] and every["skips"] == [7, 14, 28] and none["skips"] == []
    # without skips the maps change nothing: the normal decode is the code decoded alone
    assert none["bce"]["mean"] == pytest.approx(none["bce_no_maps"]["mean"], rel=1e-6)
    assert every["bce"]["mean"] != pytest.approx(every["bce_no_maps"]["mean"], rel=1e-3)
    for r in rows.values():
        assert sum(r["kl_per_dim_first_seed"]) == pytest.approx(r["kl"]["mean"], rel=1e-5)
        assert min(r["kl_per_dim_first_seed"]) >= 0 and 0 <= r["active_units"]["mean"] <= 10
    assert "| unet_skips_all | 1 |" in open("out/u.md").read()
    assert os.path.getsize("out/u.png") > 0
    code, _, err = run_module_cli(unet_skips, ["--work_dir", "nowhere", "--data_root", tiny_mnist])
    assert code == 2 and err.count("\n") == 1 and "no unet checkpoints in nowhere" in err, err
