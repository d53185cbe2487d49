import pytest
import torch

from models import MODELS, ModelConfig, build_model

REFERENCE_SHAPES = {  # the 2018 checkpoint's state_dict (docs/reproduce_2018.md)
    "fc1.weight": (32, 1, 28, 28), "fc1.bias": (32,),
    "fc21.weight": (10, 32, 1, 1), "fc21.bias": (10,),
    "fc22.weight": (10, 32, 1, 1), "fc22.bias": (10,),
    "fc3.weight": (10, 118, 1, 1), "fc3.bias": (118,),
    "fc4.weight": (118, 1, 28, 28), "fc4.bias": (1,),
}


@pytest.mark.parametrize("model_type", sorted(MODELS))
@pytest.mark.parametrize("z", [2, 10, 32])
def test_shapes_and_range(model_type, z):
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_type=model_type, latent_space_size=z))
    x = torch.rand(5, 1, 28, 28)
    out = model(x)
    logits, mu, logvar = out.logits, out.mu, out.logvar
    assert logits.shape == (5, 1, 28, 28)
    assert mu.shape == (5, z) and logvar.shape == (5, z)
    img = model.decode(torch.randn(3, z))
    assert img.shape == (3, 1, 28, 28) and img.min() >= 0 and img.max() <= 1


@pytest.mark.parametrize("model_type", sorted(MODELS))
def test_eval_mode_decodes_the_mean(model_type):
    # (a unet with skips also decodes the input's encoder maps: tests/test_unet_conv1xn.py)
    skips = {"unet_skips": "none"} if model_type == "unet" else {}  # a setting of unet's own config
    model = build_model(ModelConfig(model_type=model_type, **skips)).eval()
    x = torch.rand(4, 1, 28, 28)
    a, b = model(x).logits, model(x).logits
    assert torch.equal(a, b)
    mu, _ = model.encode(x)
    assert torch.allclose(a, model.decode_given(mu, None, x))  # x: what an autoregressive decoder reads


def test_fc_conv_names_and_shapes_match_the_2018_checkpoint():
    model = build_model(ModelConfig(model_type="fc_conv", latent_space_size=10))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == REFERENCE_SHAPES


def test_fc_conv_fast_path_equals_the_conv_formulation():
    torch.manual_seed(1)
    model = build_model(ModelConfig(model_type="fc_conv", latent_space_size=7)).eval()
    x = torch.rand(16, 1, 28, 28)
    fast = model(x)
    slow = model.forward_as_conv(x)
    for a, b in zip((fast.logits, fast.mu, fast.logvar), slow, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("split", [0, 1, 2, 3])
def test_fcn_split_filter_and_multiplier(split):
    shared = build_model(ModelConfig(model_type="fcn", split_filter=split, model_multiplier=2))
    assert len(shared.trunk) == split and len(shared.mu_head) == 4 - split
    out = shared(torch.rand(2, 1, 28, 28))
    logits, mu = out.logits, out.mu
    assert logits.shape == (2, 1, 28, 28) and mu.shape == (2, 10)
    n1 = sum(p.numel() for p in build_model(ModelConfig(model_type="fcn", model_multiplier=1)).parameters())
    n2 = sum(p.numel() for p in shared.parameters())
    assert n2 > 2 * n1


def test_unknown_model_type():
    with pytest.raises(KeyError, match="fc_conv"):
        build_model(ModelConfig(model_type="transformer"))
