import numpy as np
import pytest

from yolact_d2.data.transforms import ResizeToSquare
from yolact_d2.layers import input_region


@pytest.mark.parametrize("height,width,size,expected", [
    (80, 160, 160, (80, 160)),  # the longer side takes the input's side
    (100, 30, 550, (550, 165)),  # 30 * 5.5
    (333, 500, 550, (366, 550)),  # 333 * 1.1 = 366.3, rounded
    (550, 550, 550, (550, 550)),
])
def test_aspect_preserving_region_hand_worked(height, width, size, expected):
    assert input_region(height, width, size, preserve_aspect_ratio=True) == expected
    assert input_region(height, width, size, preserve_aspect_ratio=False) == (size, size)


def test_the_data_pipeline_places_the_image_in_the_same_region():
    image = np.full((333, 500, 3), 255, dtype=np.uint8)
    resized = ResizeToSquare(550, preserve_aspect_ratio=True).get_transform(image).apply_image(image)
    assert resized.shape[:2] == (550, 550)
    rows, cols = np.nonzero(resized[:, :, 0])
    assert (rows.max() + 1, cols.max() + 1) == input_region(333, 500, 550, preserve_aspect_ratio=True)
