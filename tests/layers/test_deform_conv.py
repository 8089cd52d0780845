import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from yolact_d2.layers import DeformConv, ModulatedDeformConv, sampled_deform_conv2d


def _conv(cls, groups=1, deformable_groups=1, stride=1, **kw):
    torch.manual_seed(0)
    return cls(4, 6, kernel_size=3, stride=stride, padding=1, groups=groups, deformable_groups=deformable_groups, **kw)


@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 2)])
def test_zero_offsets_equal_a_plain_conv(stride, groups):
    x = torch.randn(2, 4, 9, 11)
    for cls in (DeformConv, ModulatedDeformConv):
        conv = _conv(cls, groups=groups, stride=stride, **({"bias": True} if cls is ModulatedDeformConv else {}))
        h, w = (9 + 2 - 3) // stride + 1, (11 + 2 - 3) // stride + 1
        offset = torch.zeros(2, 18, h, w)
        args = (x, offset) if cls is DeformConv else (x, offset, torch.ones(2, 9, h, w))
        expected = F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=1, groups=groups)
        torch.testing.assert_close(conv(*args), expected, rtol=1e-4, atol=1e-5)


def _shifted_sampling(x, weight, offset, mask, padding=1):
    """Explicit DCN with integer offsets: each tap reads x at (y + ky - p + dy, x + kx - p + dx), 0 outside."""
    n, c, h, w = x.shape
    out = torch.zeros(n, weight.shape[0], h, w)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                for k in range(9):
                    ky, kx = divmod(k, 3)
                    dy, dx = int(offset[b, 2 * k, i, j]), int(offset[b, 2 * k + 1, i, j])
                    y, xx = i + ky - padding + dy, j + kx - padding + dx
                    if 0 <= y < h and 0 <= xx < w:
                        out[b, :, i, j] += weight[:, :, ky, kx] @ x[b, :, y, xx] * mask[b, k, i, j]
    return out


def test_integer_offsets_equal_explicit_shifted_sampling():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 5, 6, generator=g)
    offset = torch.randint(-2, 3, (1, 18, 5, 6), generator=g).float()
    mask = torch.rand(1, 9, 5, 6, generator=g)
    dcn1 = _conv(DeformConv)
    torch.testing.assert_close(dcn1(x, offset), _shifted_sampling(x, dcn1.weight, offset, torch.ones(1, 9, 5, 6)),
                               rtol=1e-4, atol=1e-4)
    dcn2 = _conv(ModulatedDeformConv, bias=False)
    torch.testing.assert_close(dcn2(x, offset, mask), _shifted_sampling(x, dcn2.weight, offset, mask),
                               rtol=1e-4, atol=1e-4)


def _bilinear_sampling(x, weight, offset, mask, padding=1):
    """Explicit DCN, 3 x 3 taps, fractional offsets: each tap reads x bilinearly at (i + ky - p + dy,
    j + kx - p + dx) from its four neighbouring pixels, 0 outside; all in the dtype of ``x``."""
    n, c, h, w = x.shape
    out = torch.zeros(n, weight.shape[0], h, w, dtype=x.dtype)
    for b, i, j, k in itertools.product(range(n), range(h), range(w), range(9)):
        ky, kx = divmod(k, 3)
        y = i + ky - padding + offset[b, 2 * k, i, j].item()
        xx = j + kx - padding + offset[b, 2 * k + 1, i, j].item()
        y0, x0 = math.floor(y), math.floor(xx)
        for yi, xi in itertools.product((y0, y0 + 1), (x0, x0 + 1)):
            if 0 <= yi < h and 0 <= xi < w:
                share = (1 - abs(y - yi)) * (1 - abs(xx - xi)) * mask[b, k, i, j].item()
                out[b, :, i, j] += weight[:, :, ky, kx] @ x[b, :, yi, xi] * share
    return out


def test_float64_samples_in_float64():
    # fractional offsets at coordinates up to ~10: float32 coordinates would be off by ~1e-6 pixels
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 5, 6, generator=g, dtype=torch.float64)
    offset = torch.randn(1, 18, 5, 6, generator=g, dtype=torch.float64) * 1.7
    mask = torch.rand(1, 9, 5, 6, generator=g, dtype=torch.float64)
    conv = ModulatedDeformConv(2, 3, kernel_size=3, padding=1, bias=False).double()
    expected = _bilinear_sampling(x, conv.weight.detach(), offset, mask)
    out = conv(x, offset, mask)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    traced = torch.jit.trace(conv, (x, offset, mask))  # torchvision's op, in float64 too
    torch.testing.assert_close(traced(x, offset, mask), expected, rtol=1e-12, atol=1e-12)


def test_sampled_op_takes_channels_last_tensors():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 5, 6, generator=g)
    offset = torch.randint(-2, 3, (2, 18, 5, 6), generator=g).float()
    mask = torch.rand(2, 9, 5, 6, generator=g)
    weight = _conv(ModulatedDeformConv).weight.detach()
    expected = _shifted_sampling(x, weight, offset, mask)
    last = [t.contiguous(memory_format=torch.channels_last) for t in (x, offset, weight, mask)]
    out = sampled_deform_conv2d(last[0], last[1], last[2], None, padding=1, mask=last[3])
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_gradients_are_finite_and_reach_offsets():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    offset = (torch.randn(2, 18, 8, 8) * 0.7).requires_grad_()
    mask = torch.rand(2, 9, 8, 8, requires_grad=True)
    conv = _conv(ModulatedDeformConv)
    conv(x, offset, mask).square().sum().backward()
    for t in (x.grad, offset.grad, mask.grad, conv.weight.grad, conv.bias.grad):
        assert t is not None and torch.isfinite(t).all() and t.abs().sum() > 0


def test_same_parameter_names_and_shapes_as_detectron2_ops():
    """detectron2's DeformConv / ModulatedDeformConv: weight (out, in / groups, 3, 3), bias (out,) if any."""
    ours = ModulatedDeformConv(4, 6, kernel_size=3, padding=1, groups=2, bias=True)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {"weight": (6, 2, 3, 3), "bias": (6,)}
    assert {k: tuple(v.shape) for k, v in DeformConv(4, 6, 3).state_dict().items()} == {"weight": (6, 4, 3, 3)}
    with pytest.raises(ValueError, match="no bias"):
        DeformConv(4, 6, 3, bias=True)


@pytest.mark.parametrize(
    "stride,padding,dilation,groups,deformable_groups,modulated",
    [(1, 1, 1, 1, 1, True), (2, 1, 1, 2, 1, True), (1, 2, 2, 1, 2, False), (2, 0, 1, 2, 2, True)],
)
def test_sampled_deform_conv_equals_torchvision_with_gradients(
    stride, padding, dilation, groups, deformable_groups, modulated
):
    """Fractional offsets, some sampling points past the border: values and all gradients match torchvision."""
    g = torch.Generator().manual_seed(stride + 2 * padding + 4 * groups + 8 * deformable_groups)
    x = torch.randn(2, 4, 7, 9, generator=g)
    weight = torch.randn(6, 4 // groups, 3, 3, generator=g)
    bias = torch.randn(6, generator=g)
    out_h, out_w = [(s + 2 * padding - 2 * dilation - 1) // stride + 1 for s in (7, 9)]
    offset = torch.randn(2, 18 * deformable_groups, out_h, out_w, generator=g) * 2.5
    mask = torch.rand(2, 9 * deformable_groups, out_h, out_w, generator=g) if modulated else None
    results = []
    for op in (sampled_deform_conv2d, deform_conv2d):
        inputs = [t.clone().requires_grad_() if t is not None else None for t in (x, offset, weight, bias, mask)]
        out = op(inputs[0], inputs[1], inputs[2], inputs[3], stride, padding, dilation, inputs[4])
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append([out] + [t.grad for t in inputs if t is not None])
    assert results[0][0].shape == (2, 6, out_h, out_w)
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_modules_run_the_sampled_op_on_cpu_and_torchvision_when_tracing():
    conv = _conv(ModulatedDeformConv)
    x, offset, mask = torch.randn(1, 4, 6, 6), torch.randn(1, 18, 6, 6), torch.rand(1, 9, 6, 6)
    assert conv._implementation(x) == "sampled"
    traced = torch.jit.trace(conv, (x, offset, mask))
    assert "deform_conv2d" in str(traced.inlined_graph) and "grid_sampler" not in str(traced.inlined_graph)
    torch.testing.assert_close(traced(x, offset, mask), conv(x, offset, mask), rtol=1e-4, atol=1e-5)


def test_sampled_op_under_bfloat16_autocast_samples_at_float32_coordinates():
    # offsets move taps by fractions of a pixel at coordinates up to 68: bfloat16 coordinates would round them
    # to 0.25-0.5 pixel steps; the float32 reference runs on the same bfloat16-rounded inputs
    torch.manual_seed(0)
    x, offset = torch.randn(1, 16, 69, 69).bfloat16(), (torch.randn(1, 18, 69, 69) * 3).bfloat16()
    mask, weight = torch.rand(1, 9, 69, 69).bfloat16(), torch.randn(8, 16, 3, 3) * 0.1
    expected = sampled_deform_conv2d(x.float(), offset.float(), weight, None, 1, 1, 1, mask.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sampled_deform_conv2d(x, offset, weight, None, 1, 1, 1, mask)
    assert out.dtype == torch.bfloat16 and out.shape == expected.shape
    assert (out.float() - expected).norm() / expected.norm() < 0.01


def test_traced_module_runs_bfloat16_inputs_through_torchvision_in_float32():
    # torchvision's CPU kernel has no bfloat16: the module computes in float32 and returns bfloat16
    conv = _conv(ModulatedDeformConv)
    x, offset = torch.randn(1, 4, 6, 6).bfloat16(), torch.randn(1, 18, 6, 6).bfloat16()
    mask = torch.rand(1, 9, 6, 6).bfloat16()
    traced = torch.jit.trace(conv, (x, offset, mask), check_trace=False)
    out = traced(x, offset, mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), conv(x.float(), offset.float(), mask.float()), rtol=0.02, atol=0.02)
