import pytest
import torch

from detectron2.modeling import FPN, build_backbone

from yolact_d2.modeling.backbone import YolactFPN, YolactTopBlock

# The R-18 of tests/conftest.py: bottom-up channels, and the FPN's.
RES_CHANNELS = {"res3": 128, "res4": 256, "res5": 512}
C = 64


def test_p3_to_p7_shapes_at_550(cfg):
    cfg.MODEL.YOLACT.INPUT_SIZE = 550
    backbone = build_backbone(cfg).eval()
    assert isinstance(backbone, YolactFPN)
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 550, 550))
    sizes = {k: tuple(v.shape[-2:]) for k, v in out.items()}
    assert sizes == {"p3": (69, 69), "p4": (35, 35), "p5": (18, 18), "p6": (9, 9), "p7": (5, 5)}
    assert all(v.shape[1] == C for v in out.values())
    strides = {k: s.stride for k, s in backbone.output_shape().items()}
    assert strides == {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}


def _known_weights(backbone, top_bias):
    """Lateral 1x1 convs average their input channels, output 3x3 convs are the identity, P6/P7 convs sum all
    channels and taps (weights 1, bias ``top_bias``)."""
    with torch.no_grad():
        for level, name in ((3, "res3"), (4, "res4"), (5, "res5")):
            lateral, output = getattr(backbone, f"fpn_lateral{level}"), getattr(backbone, f"fpn_output{level}")
            lateral.weight.fill_(1.0 / RES_CHANNELS[name])
            lateral.bias.zero_()
            output.weight.zero_()
            output.weight[:, :, 1, 1] = torch.eye(C)
            output.bias.zero_()
        for conv in (backbone.top_block.p6, backbone.top_block.p7):
            conv.weight.fill_(1.0)
            conv.bias.fill_(top_bias)


def _constant_bottom_up(values, sizes):
    return {name: torch.full((1, RES_CHANNELS[name], s, s), float(v)) for (name, v), s in zip(values.items(), sizes)}


def _taps(out_size, in_size):
    """How many of a 3x3, stride-2, padding-1 conv's rows fall inside an input of ``in_size`` rows, per output row."""
    return torch.tensor([sum(0 <= 2 * o - 1 + k < in_size for k in range(3)) for o in range(out_size)], dtype=torch.float32)


def test_top_down_sums_relu_outputs_and_p6_p7_from_p5_by_hand(cfg):
    """Constant bottom-up maps a, b, c: P5 = c, P4 = b + c, P3 = a + b + c (any interpolation keeps a constant);
    P6 sums 3x3 taps of the C channels of P5 inside the map, P7 the same of P6."""
    backbone = build_backbone(cfg).eval()
    _known_weights(backbone, top_bias=0.5)
    a, b, c = 2.0, 3.0, 1.5
    with torch.no_grad():
        out = backbone.pyramid(_constant_bottom_up({"res3": a, "res4": b, "res5": c}, (19, 10, 5)))
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {
        "p3": (19, 19), "p4": (10, 10), "p5": (5, 5), "p6": (3, 3), "p7": (2, 2)}
    for name, value in (("p3", a + b + c), ("p4", b + c), ("p5", c)):
        torch.testing.assert_close(out[name], torch.full_like(out[name], value), msg=name)
    r6 = _taps(3, 5)  # [2, 3, 2]
    p6 = C * c * r6[:, None] * r6[None, :] + 0.5
    torch.testing.assert_close(out["p6"][0], p6.expand(C, 3, 3))
    # P7[i, j] = C * (sum of P6 over the rows 2i-1..2i+1 and columns 2j-1..2j+1 inside it) + bias
    p7 = torch.tensor([[C * p6[max(0, 2 * i - 1):2 * i + 2, max(0, 2 * j - 1):2 * j + 2].sum() + 0.5
                        for j in range(2)] for i in range(2)])
    torch.testing.assert_close(out["p7"][0], p7.expand(C, 2, 2))


@pytest.mark.parametrize("relu_before_p7", [False, True])
def test_outputs_pass_a_relu_before_p6(cfg, relu_before_p7):
    """A negative res5 makes P5 = relu(c) = 0, so P6 is its bias alone (not a function of C5 or of P5 before the
    ReLU); P4 = relu(b + c). With ``RELU_BEFORE_P7`` a negative P6 gives P7 = its bias."""
    cfg.MODEL.YOLACT.FPN.RELU_BEFORE_P7 = relu_before_p7
    backbone = build_backbone(cfg).eval()
    _known_weights(backbone, top_bias=-0.25)
    with torch.no_grad():
        out = backbone.pyramid(_constant_bottom_up({"res3": 0.5, "res4": 3.0, "res5": -1.0}, (20, 10, 5)))
    torch.testing.assert_close(out["p5"], torch.zeros_like(out["p5"]))
    torch.testing.assert_close(out["p4"], torch.full_like(out["p4"], 2.0))
    torch.testing.assert_close(out["p3"], torch.full_like(out["p3"], 2.5))
    torch.testing.assert_close(out["p6"], torch.full_like(out["p6"], -0.25))
    # without the ReLU, P7 sums the taps of P6 = -0.25 over the C channels (2 x 2 of them at the corner)
    p7_corner = -0.25 if relu_before_p7 else C * 4 * -0.25 - 0.25
    torch.testing.assert_close(out["p7"][0, 0, 0, 0], torch.tensor(p7_corner))


def test_without_yolacts_changes_it_is_detectron2s_fpn(cfg):
    """Nearest 2x upsampling and no output ReLU at an input divisible by 128: detectron2's FPN with the same
    modules and weights gives the same pyramid."""
    cfg.MODEL.YOLACT.FPN.INTERPOLATION = "nearest"
    cfg.MODEL.YOLACT.FPN.RELU_OUTPUTS = False
    ours = build_backbone(cfg).eval()
    theirs = FPN(bottom_up=ours.bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=C,
                 top_block=ours.top_block).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert set(got) == set(expected) == {"p3", "p4", "p5", "p6", "p7"}
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], msg=k)
    assert (got["p3"] < 0).any()  # no ReLU: the comparison would not hide one


def test_odd_input_sizes_work_without_padding(cfg):
    backbone = build_backbone(cfg).eval()
    assert backbone.size_divisibility == 0
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 150, 150))
    assert tuple(out["p3"].shape[-2:]) == (19, 19) and tuple(out["p4"].shape[-2:]) == (10, 10)


def test_p6_p7_weight_gradients_of_a_one_pixel_p5_are_exact_under_cpu_autocast():
    # A 3 x 3 stride-2 conv (padding 1) of a 1 x 1 map: its output pixel sees the input only through the centre
    # tap, so the weight gradient is zero elsewhere and x g^T at the centre. oneDNN's bfloat16 kernel leaves the
    # last kernel column uninitialised (garbage, at times NaN) for such inputs; a float32 P6 / P7 gets it right.
    torch.manual_seed(0)
    block = YolactTopBlock(32, relu_before_p7=True)
    for _ in range(8):  # the garbage differs from run to run: on a CPU with native bfloat16 most trials catch it
        p5 = torch.randn(2, 32, 1, 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            p6, p7 = block(p5)
        for conv, x, out in ((block.p6, p5, p6), (block.p7, p6.detach().float().relu(), p7)):
            g = torch.randn(2, 32, 1, 1)
            (grad,) = torch.autograd.grad(out, conv.weight, g, retain_graph=True)
            assert torch.isfinite(grad).all()
            outside_centre = torch.ones(3, 3, dtype=torch.bool)
            outside_centre[1, 1] = False
            assert torch.count_nonzero(grad[:, :, outside_centre]) == 0
            # dL/dW[o, i, 1, 1] = sum over the batch of g[n, o] x[n, i], by hand
            torch.testing.assert_close(grad[:, :, 1, 1], g.flatten(1).t() @ x.flatten(1), rtol=1e-4, atol=1e-5)
