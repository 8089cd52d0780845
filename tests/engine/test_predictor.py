"""
YolactPredictor on photographs: gray, alpha, 16-bit, EXIF-rotated, very large, tiny and 1 x N images. Its outputs
are checked against the model called directly on the image as read, in the config's channel order.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.engine import DefaultPredictor

from yolact_d2.engine import YolactPredictor
from yolact_d2.layers import precision as precision_module


@pytest.fixture
def predictor(cfg):
    """The small random YOLACT (input 96), keeping its 3 best detections whatever their score."""
    cfg.MODEL.YOLACT.INPUT_SIZE = 96
    cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 3
    return YolactPredictor(cfg)


def _image(height, width):
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _fields(instances):
    return instances.image_size, instances.pred_boxes.tensor, instances.scores, instances.pred_masks


def _detections(predictor, image):
    return _fields(predictor(image)["instances"])


def _model_detections(model, image):
    """The model called directly on an (H, W, 3) array as it is (no resize, no channel swap), as a (3, H, W) tensor."""
    with torch.no_grad():
        return _fields(model([{"image": torch.from_numpy(image.transpose(2, 0, 1).copy())}])[0]["instances"])


def _assert_same(got, expected):
    (size, boxes, scores, masks), (expected_size, expected_boxes, expected_scores, expected_masks) = got, expected
    assert size == expected_size and len(scores) > 0
    torch.testing.assert_close(boxes, expected_boxes, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(scores, expected_scores, rtol=1e-6, atol=1e-7)
    assert torch.equal(masks, expected_masks)


@pytest.mark.parametrize("height, width", [(48, 64), (100, 1500)])
def test_the_predictor_gives_the_model_on_the_image_as_read(predictor, height, width):
    image = _image(height, width)
    _assert_same(_detections(predictor, image), _model_detections(predictor.model, image))


def test_an_rgb_config_gets_the_channels_swapped_once(cfg, predictor):
    cfg.INPUT.FORMAT = "RGB"
    rgb_predictor = YolactPredictor(cfg)
    rgb_predictor.model.load_state_dict(predictor.model.state_dict())
    bgr = _image(48, 64)
    got = _detections(rgb_predictor, bgr)  # the predictor takes BGR arrays and gives the model RGB
    _assert_same(got, _model_detections(predictor.model, bgr[:, :, ::-1]))
    unswapped = _model_detections(predictor.model, bgr)
    assert not torch.allclose(got[2], unswapped[2])  # the channel order matters to these weights


def test_gray_alpha_and_16_bit_arrays_predict_as_their_8_bit_bgr_image(predictor):
    bgr = _image(48, 64)
    gray = bgr[:, :, 1]
    expected = _detections(predictor, bgr)
    expected_gray = _detections(predictor, np.repeat(gray[:, :, None], 3, axis=2))
    cases = [
        (np.dstack([bgr, np.zeros((48, 64), np.uint8)]), expected),  # alpha dropped, whatever its value
        (bgr.astype(np.uint16) * 257, expected),  # 16 bits: v * 257 is v in 8 bits
        (gray, expected_gray),
    ]
    for image, (size, boxes, scores, masks) in cases:
        got_size, got_boxes, got_scores, got_masks = _detections(predictor, image)
        assert got_size == size == (48, 64)
        torch.testing.assert_close(got_boxes, boxes)
        torch.testing.assert_close(got_scores, scores)
        assert torch.equal(got_masks, masks)


def test_a_file_is_read_upright_by_its_exif_orientation(predictor, tmp_path):
    upright = _image(40, 60)
    path = str(tmp_path / "camera.png")
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright[:, :, ::-1], 1)))  # RGB, stored sideways
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored.save(path, exif=exif)  # PNG: lossless, the upright image exactly
    _assert_same(_detections(predictor, path), _detections(predictor, upright))  # not the stored 60 x 40


@pytest.mark.parametrize("height, width", [(3000, 4000), (16, 16), (1, 37), (37, 1)])
def test_very_large_tiny_and_one_pixel_wide_images(predictor, height, width):
    image = _image(height, width)
    size, boxes, scores, masks = got = _detections(predictor, image)
    _assert_same(got, _model_detections(predictor.model, image))
    assert masks.shape == (3, height, width) and masks.dtype == torch.bool
    assert (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all() and (boxes >= 0).all()
    assert (scores[:-1] >= scores[1:]).all()


def test_an_array_that_is_not_an_image_is_a_clear_error(predictor):
    with pytest.raises(ValueError, match=r"got shape \(4, 5, 6\)"):
        predictor(np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(ValueError, match="8- or 16-bit integers.*float64"):
        predictor(np.zeros((4, 5, 3)))


@pytest.mark.parametrize("predictor_class", [YolactPredictor, DefaultPredictor])
def test_the_predictors_run_in_the_configs_precision(cfg, predictor_class, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: True)
    cfg.MODEL.YOLACT.INPUT_SIZE = 96
    cfg.MODEL.YOLACT.PRECISION = "bfloat16"
    cfg.DATASETS.TEST = ()
    predictor = predictor_class(cfg)
    assert predictor.model.precision == "bfloat16"
    head_dtypes = []
    predictor.model.head.register_forward_hook(lambda module, args, out: head_dtypes.append(out[0].dtype))
    instances = predictor(_image(48, 64))["instances"]
    assert head_dtypes == [torch.bfloat16]
    assert instances.scores.dtype == instances.pred_boxes.tensor.dtype == torch.float32
