import torch

from detectron2.modeling import build_backbone

from yolact_d2.modeling.backbone import YolactFPN, YolactTopBlock


def test_p3_to_p7_shapes_at_550(cfg):
    cfg.MODEL.YOLACT.INPUT_SIZE = 550
    backbone = build_backbone(cfg).eval()
    assert isinstance(backbone, YolactFPN)
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 550, 550))
    sizes = {k: tuple(v.shape[-2:]) for k, v in out.items()}
    assert sizes == {"p3": (69, 69), "p4": (35, 35), "p5": (18, 18), "p6": (9, 9), "p7": (5, 5)}
    assert all(v.shape[1] == 64 for v in out.values())
    strides = {k: s.stride for k, s in backbone.output_shape().items()}
    assert strides == {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}


def test_p6_p7_come_from_p5_and_outputs_follow_yolact_fpn(cfg):
    backbone = build_backbone(cfg).eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        out = backbone(x)
        c = backbone.bottom_up(x)
        # recompute the pyramid by hand from the same modules
        p5 = backbone.fpn_lateral5(c["res5"])
        p4 = backbone.fpn_lateral4(c["res4"]) + torch.nn.functional.interpolate(
            p5, size=c["res4"].shape[-2:], mode="bilinear", align_corners=False)
        p3 = backbone.fpn_lateral3(c["res3"]) + torch.nn.functional.interpolate(
            p4, size=c["res3"].shape[-2:], mode="bilinear", align_corners=False)
        expected = {
            "p3": backbone.fpn_output3(p3).relu(),
            "p4": backbone.fpn_output4(p4).relu(),
            "p5": backbone.fpn_output5(p5).relu(),
        }
        expected["p6"] = backbone.top_block.p6(expected["p5"])
        expected["p7"] = backbone.top_block.p7(expected["p6"])
    for k, v in expected.items():
        torch.testing.assert_close(out[k], v)


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
