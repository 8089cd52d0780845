import pytest
import torch
import torch.nn.functional as F

from yolact_d2.layers import conv_relu_stack


def _explicit(stack, x, norm):
    """The stack's layers written out with functional ops."""
    for conv in stack[::2]:
        x = F.conv2d(x, conv.weight, conv.bias, padding=1)
        if norm == "GN":
            x = F.group_norm(x, conv.norm.num_groups, conv.norm.weight, conv.norm.bias, conv.norm.eps)
        x = F.relu(x)
    return x


@pytest.mark.parametrize("norm", ["", "GN"])
def test_conv_relu_stack_matches_explicit_layers(norm):
    torch.manual_seed(0)
    stack = conv_relu_stack(8, [32, 32], norm).eval()
    for conv in stack[::2]:
        assert (conv.bias is None) == bool(norm)
        if norm:  # random affine parameters, so that a norm applied without them would differ
            torch.nn.init.normal_(conv.norm.weight)
            torch.nn.init.normal_(conv.norm.bias)
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        y = stack(x)
        assert y.shape == (2, 32, 5, 6)
        torch.testing.assert_close(y, _explicit(stack, x, norm))


def test_empty_stack_is_identity():
    x = torch.randn(1, 3, 4, 4)
    assert torch.equal(conv_relu_stack(3, [], "GN")(x), x)
