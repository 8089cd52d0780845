import pytest
import torch
from torch import nn

from detectron2.layers import Conv2d

from yolact_d2.layers import ChannelsLastGroupNorm, convert_group_norms


def _group_norm_by_loops(x, groups, weight, bias, eps):
    """Group normalisation written out per image and group, in float64."""
    x = x.double()
    out = torch.empty_like(x)
    per_group = x.shape[1] // groups
    for n in range(x.shape[0]):
        for g in range(groups):
            channels = slice(g * per_group, (g + 1) * per_group)
            values = x[n, channels]
            mean, var = values.mean(), values.var(unbiased=False)
            out[n, channels] = (values - mean) / torch.sqrt(var + eps)
    return out * weight.double()[:, None, None] + bias.double()[:, None, None]


def _norm(groups=4, channels=16):
    torch.manual_seed(0)
    norm = ChannelsLastGroupNorm(groups, channels)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    return norm


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_channels_last_input_is_normalised_and_stays_channels_last(dtype):
    norm = _norm()
    x = (torch.randn(2, 16, 6, 5) * 3 + 1).to(dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = norm(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    expected = _group_norm_by_loops(x.detach(), 4, norm.weight.detach(), norm.bias.detach(), norm.eps)
    torch.testing.assert_close(y.double(), expected, atol=0.05, rtol=0.02)

    # gradients against autograd through the explicit formula (float64, on the same inputs)
    upstream = torch.randn(y.shape)
    y.backward(upstream.to(dtype))
    x64 = x.detach().double().requires_grad_(True)
    w64, b64 = (p.detach().double().requires_grad_(True) for p in (norm.weight, norm.bias))
    _group_norm_by_loops(x64, 4, w64, b64, norm.eps).backward(upstream.double())
    torch.testing.assert_close(x.grad.double(), x64.grad, atol=0.05, rtol=0.05)
    torch.testing.assert_close(norm.weight.grad.double(), w64.grad, atol=0.2, rtol=0.02)
    torch.testing.assert_close(norm.bias.grad.double(), b64.grad, atol=0.2, rtol=0.02)


@pytest.mark.parametrize("channels_last", [False, True])
def test_float32_input_gives_nn_group_norms_exact_values(channels_last):
    norm = _norm()
    x = torch.randn(2, 16, 6, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    plain = nn.GroupNorm(4, 16)
    plain.load_state_dict(norm.state_dict())
    assert torch.equal(norm(x), plain(x))


def test_convert_group_norms_swaps_every_group_norm_and_keeps_parameters_and_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(
        Conv2d(3, 8, 3, padding=1, bias=False, norm=nn.GroupNorm(2, 8)),
        nn.Sequential(nn.GroupNorm(4, 8), nn.ReLU()),
        nn.BatchNorm2d(8),
    ).eval()
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            nn.init.normal_(m.weight)
    params = dict(model.named_parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 7, 7)
    before = model(x)

    assert convert_group_norms(model) is model
    assert type(model[0].norm) is ChannelsLastGroupNorm and type(model[1][0]) is ChannelsLastGroupNorm
    assert model[0].norm.num_groups == 2 and model[1][0].num_groups == 4 and not model[0].norm.training
    assert type(model[2]) is nn.BatchNorm2d
    assert all(p is params[name] for name, p in model.named_parameters())  # same tensors, same names
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(model(x), before)
