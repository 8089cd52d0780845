"""The benchmark's images and input dicts."""
import cv2
import numpy as np
import torch

from yolact_d2.benchmark.inputs import inference_inputs, read_images, synthetic_images, training_inputs


def test_synthetic_images_are_deterministic_squares():
    a, b = synthetic_images(2, 64), synthetic_images(2, 64)
    assert all(x.shape == (3, 64, 64) and x.dtype == torch.uint8 for x in a)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[0], a[1])


def test_read_images_resizes_to_a_square(tmp_path):
    path = str(tmp_path / "x.png")
    image = np.zeros((40, 80, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    cv2.imwrite(path, image)
    (x,) = read_images([path], 32)
    assert x.shape == (3, 32, 32) and (x[0] == 255).all() and (x[2] == 0).all()


def test_read_images_scales_16_bit_gray_to_8_bits(tmp_path):
    cv2.imwrite(str(tmp_path / "gray16.png"), np.full((10, 20), 30000, dtype=np.uint16))
    (image,) = read_images([str(tmp_path / "gray16.png")], 16)
    assert image.shape == (3, 16, 16) and (image == round(30000 / 257)).all()


def test_inputs_follow_the_config_format(cfg):
    image = synthetic_images(1, 32)[0]
    assert torch.equal(inference_inputs([image], cfg)[0]["image"], image)  # BGR
    cfg.INPUT.FORMAT = "RGB"
    x = inference_inputs([image], cfg)[0]
    assert torch.equal(x["image"], image.flip(0)) and (x["height"], x["width"]) == (32, 32)


def test_training_inputs_have_boxes_classes_and_masks(cfg):
    (x,) = training_inputs(synthetic_images(1, 64), cfg, num_instances=4)
    inst = x["instances"]
    assert inst.image_size == (64, 64) and len(inst) == 4
    assert inst.gt_masks.tensor.shape == (4, 64, 64) and inst.gt_masks.tensor.any(dim=(1, 2)).all()
    assert ((inst.gt_classes >= 0) & (inst.gt_classes < cfg.MODEL.YOLACT.NUM_CLASSES)).all()
    torch.testing.assert_close(inst.gt_boxes.tensor, inst.gt_masks.get_bounding_boxes().tensor)
