"""
``yolact_shapes``: a synthetic instance-segmentation dataset that yolact_d2 generates on first use.

It lets YOLACT be trained and evaluated with no download and no GPU: a few hundred images of
geometric shapes (:data:`THING_CLASSES`) on cluttered backgrounds, in COCO format, produced
deterministically in seconds. Each image (240-400 px per side, aspect ratios vary) holds 3-12
shapes from ~12 px to half the shorter image side, randomly rotated; some are placed touching or
overlapping an earlier shape of the same class. Later shapes occlude earlier ones, and an
annotation is the *visible* part of its shape, so the masks of one image are disjoint. A placement
is rejected when it would leave any shape (itself included, after clipping by the image border)
with a visible area under ``_MIN_VISIBLE_AREA`` pixels or under ``_MIN_VISIBLE_FRACTION`` of its
whole area, so that every annotated shape stays recognisable by its geometry. Colours are random
and independent of the class, and kept apart from the colours around a shape so that neighbours
can be told apart; shapes are shaded with gradients, stripes and noise; backgrounds are gradients
with noise, lines and soft blobs that are not instances.

Images are PNG: lossless, so every pixel of a mask has exactly its shape's colour and the mask
edges are exact, which JPEG's ringing at hard edges would blur. Annotations are COCO "instances"
json with ``iscrowd`` 0, ``segmentation`` a compressed RLE (pycocotools' ``mask.encode``, with
``counts`` as str), ``area`` the mask's pixel count and ``bbox`` its tight box. Category ids are
1..C in the order of :data:`THING_CLASSES` (detectron2's loader maps them to 0..C-1).

Layout, under :func:`get_yolact_shapes_dir`::

    yolact_shapes/{train,val}/000000.png ...
    yolact_shapes/annotations/instances_{train,val}.json

The json is the manifest (``info.version``, ``info.num_images``): a split is used only if its json
parses, matches :data:`DATASET_VERSION` and the image count, and all its images exist; otherwise
it is generated again. A split is written into a temporary folder beside it, then moved in place,
the json last, under a file lock, so an interrupted or concurrent run never leaves a split that
looks complete. Bump :data:`DATASET_VERSION` whenever the generator changes, so that caches are
regenerated.

Importing this module registers :data:`TRAIN_NAME` and :data:`VAL_NAME` under the default root;
call :func:`register_yolact_shapes` to register them elsewhere.

Coordinates: pixel (row i, column j) covers [j, j + 1) x [i, i + 1) in COCO's continuous (x, y)
coordinates; boxes are XYWH in that system (a mask spanning columns j0..j1 has x = j0,
w = j1 - j0 + 1). Shape polygons are in cv2's convention, where the centre of pixel (i, j) is the
point (x=j, y=i).
"""
import functools
import glob
import json
import os
import shutil
import tempfile
import zlib

import cv2
import numpy as np
from iopath.common.file_io import file_lock
from pycocotools import mask as mask_util

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = [
    "DATASET_NAME",
    "DATASET_VERSION",
    "TRAIN_NAME",
    "VAL_NAME",
    "SPLIT_SIZES",
    "THING_CLASSES",
    "get_yolact_shapes_dir",
    "generate_yolact_shapes",
    "ensure_yolact_shapes",
    "load_yolact_shapes",
    "register_yolact_shapes",
]

DATASET_NAME = "yolact_shapes"
# Version of the generator, stored in the json; a cached split of another version is regenerated.
DATASET_VERSION = 1
TRAIN_NAME = DATASET_NAME + "_train"
VAL_NAME = DATASET_NAME + "_val"
# Default number of images per split.
SPLIT_SIZES = {"train": 300, "val": 100}
THING_CLASSES = ("circle", "triangle", "rectangle", "star", "ring")

_SEED = 550
_SIDE_RANGE = (240, 400)  # inclusive range of image widths and heights, in pixels
_BACKGROUND_DOWNSCALE = 8  # the smooth part of a background is drawn at 1/8 of the resolution
_NUM_SHAPES_RANGE = (3, 12)  # inclusive range of the number of shapes placed per image
_TRIES_PER_SHAPE = 20  # an image gets this many placement attempts per shape it should hold
_MIN_DIAMETER = 12.0  # pixels, of the circumscribed circle
_MAX_DIAMETER_FRACTION = 0.5  # of the shorter image side
_MIN_VISIBLE_AREA = 40  # pixels
_MIN_VISIBLE_FRACTION = 0.5  # of the shape's whole area, before occlusion and clipping
_SAME_CLASS_NEIGHBOUR_PROB = 0.35  # chance that a shape is put against an earlier one of its class
_MIN_COLOUR_DISTANCE = 80.0  # L2 in BGR, between a shape and its surroundings
_CIRCLE_VERTICES = 64
_POLYGON_SHIFT = 4  # cv2 fractional bits: vertices are rasterised with 1/16 pixel precision


def get_yolact_shapes_dir(root=None):
    """
    Args:
        root (str or None): folder holding the datasets of yolact_d2; None means the env var
            ``YOLACT_D2_DATASETS`` if set, else ``~/.cache/yolact_d2/datasets``.

    Returns:
        str: absolute path of the ``yolact_shapes`` folder under ``root``.
    """
    return os.path.join(_resolve_root(root), DATASET_NAME)


def _resolve_root(root):
    """Absolute path of the datasets' folder ``root`` (see :func:`get_yolact_shapes_dir`)."""
    if root is None:
        root = os.environ.get("YOLACT_D2_DATASETS", "~/.cache/yolact_d2/datasets")
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


def _json_path(dataset_dir, split):
    return os.path.join(dataset_dir, "annotations", f"instances_{split}.json")


def generate_yolact_shapes(root, split, num_images):
    """
    Generate (again) a split of ``yolact_shapes``, replacing whatever is there.

    Args:
        root (str or None): see :func:`get_yolact_shapes_dir`.
        split (str): name of the split ("train", "val" or any other); it seeds the images.
        num_images (int): the images are numbered 0..num_images-1, and image k is the same for any
            ``num_images`` > k.

    Returns:
        str: path of the split's COCO json.
    """
    dataset_dir = get_yolact_shapes_dir(root)
    with _split_lock(dataset_dir, split):
        _write_split(dataset_dir, split, num_images)
    return _json_path(dataset_dir, split)


def ensure_yolact_shapes(root, split, num_images):
    """
    Like :func:`generate_yolact_shapes`, but keeps the split on disk if it is complete and valid.

    Returns:
        str: path of the split's COCO json.
    """
    dataset_dir = get_yolact_shapes_dir(root)
    if not _is_valid_split(dataset_dir, split, num_images):
        with _split_lock(dataset_dir, split):
            if not _is_valid_split(dataset_dir, split, num_images):
                _write_split(dataset_dir, split, num_images)
    return _json_path(dataset_dir, split)


def load_yolact_shapes(root, split, num_images, dataset_name=None):
    """
    Generate the split if needed, and load it with detectron2's :func:`load_coco_json`.

    Returns:
        list[dict]: detectron2's dataset dicts; with ``dataset_name``, category ids are 0..C-1 and
        the dataset's metadata gets ``thing_classes``.
    """
    json_file = ensure_yolact_shapes(root, split, num_images)
    image_root = os.path.join(get_yolact_shapes_dir(root), split)
    return load_coco_json(json_file, image_root, dataset_name)


def register_yolact_shapes(root=None, split_sizes=None):
    """
    Register :data:`TRAIN_NAME` and :data:`VAL_NAME` (one per split of ``split_sizes``) in
    detectron2's DatasetCatalog and MetadataCatalog, replacing earlier registrations of these names.
    Nothing is generated until the dataset is first loaded by ``DatasetCatalog.get``; build the data
    loader before a ``COCOEvaluator``, which reads the json named in the metadata.

    Args:
        root (str or None): see :func:`get_yolact_shapes_dir`; it is resolved now.
        split_sizes (dict[str, int] or None): number of images per split (the names are
            ``yolact_shapes_<split>``); default :data:`SPLIT_SIZES`.
    """
    root = _resolve_root(root)
    dataset_dir = get_yolact_shapes_dir(root)
    for split, num_images in (split_sizes or SPLIT_SIZES).items():
        name = f"{DATASET_NAME}_{split}"
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        if name in MetadataCatalog:
            MetadataCatalog.remove(name)
        DatasetCatalog.register(
            name, functools.partial(load_yolact_shapes, root, split, num_images, name)
        )
        MetadataCatalog.get(name).set(
            thing_classes=list(THING_CLASSES),
            json_file=_json_path(dataset_dir, split),
            image_root=os.path.join(dataset_dir, split),
            evaluator_type="coco",
        )


# ---------------------------------------------------------------------------------------------
# Files: locking, validation, atomic writing.
# ---------------------------------------------------------------------------------------------


def _split_lock(dataset_dir, split):
    """A lock (file ``<dataset_dir>/<split>.lock``) serialising the writers of one split."""
    return file_lock(os.path.join(dataset_dir, split))


def _is_valid_split(dataset_dir, split, num_images):
    """Whether the split's json parses, has this version and image count, and its images exist."""
    try:
        with open(_json_path(dataset_dir, split)) as f:
            coco = json.load(f)
        info, images = coco["info"], coco["images"]
        image_files = [os.path.join(dataset_dir, split, image["file_name"]) for image in images]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (
        info.get("version") == DATASET_VERSION
        and info.get("num_images") == len(images) == num_images
        and all(os.path.isfile(f) for f in image_files)
    )


def _write_split(dataset_dir, split, num_images):
    """Render a split into a temporary folder in ``dataset_dir``, then move it in place."""
    for stale in glob.glob(os.path.join(dataset_dir, f".tmp-{split}-*")):
        _remove(stale)  # left by an interrupted run (we hold the split's lock)
    tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=dataset_dir)
    try:
        coco = _render_split(os.path.join(tmp_dir, split), split, num_images)
        with open(os.path.join(tmp_dir, "instances.json"), "w") as f:
            json.dump(coco, f)
        _install(tmp_dir, dataset_dir, split)
    finally:
        _remove(tmp_dir)


def _install(tmp_dir, dataset_dir, split):
    """Replace the split's images and json by those in ``tmp_dir``: old json first, new one last."""
    json_path = _json_path(dataset_dir, split)
    image_dir = os.path.join(dataset_dir, split)
    _remove(json_path)
    _remove(image_dir)
    os.replace(os.path.join(tmp_dir, split), image_dir)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    os.replace(os.path.join(tmp_dir, "instances.json"), json_path)


def _remove(path):
    """Delete a file, a link (not its target) or a folder tree, if it exists."""
    if os.path.islink(path) or os.path.isfile(path):
        os.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


# ---------------------------------------------------------------------------------------------
# COCO json.
# ---------------------------------------------------------------------------------------------


def _render_split(image_dir, split, num_images):
    """Render a split's images as PNG files in ``image_dir``; returns the split's COCO json dict."""
    os.makedirs(image_dir)
    images, annotations = [], []
    for index in range(num_images):
        image, instances = _render_image(_image_rng(split, index))
        file_name = f"{index:06d}.png"
        cv2.imwrite(os.path.join(image_dir, file_name), image)
        image_id = index + 1
        height, width = image.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for class_index, mask in instances:
            annotations.append(_annotation(mask, class_index, image_id, len(annotations) + 1))
    info = {
        "description": f"{DATASET_NAME} {split}, synthetic, generated by yolact_d2",
        "version": DATASET_VERSION,
        "num_images": num_images,
    }
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(THING_CLASSES)]
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def _image_rng(split, index):
    """The random generator of one image, seeded by the split's name and the image's index."""
    return np.random.default_rng([_SEED, zlib.crc32(split.encode()), index])


def _annotation(mask, class_index, image_id, annotation_id):
    """COCO annotation of a (H, W) bool mask: RLE segmentation, pixel-count area, tight XYWH box."""
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": class_index + 1,
        "segmentation": rle,
        "area": int(mask_util.area(rle)),
        "bbox": mask_util.toBbox(rle).tolist(),
        "iscrowd": 0,
    }


# ---------------------------------------------------------------------------------------------
# Images.
# ---------------------------------------------------------------------------------------------


def _render_image(rng):
    """
    Draw a random image of shapes with the numpy Generator ``rng``.

    Returns:
        image (ndarray): (H, W, 3) uint8, BGR.
        instances (list[tuple[int, ndarray]]): (class index in :data:`THING_CLASSES`, (H, W) bool
            visible mask) per shape, bottom to top; the masks are disjoint and non-empty.
    """
    height, width = rng.integers(_SIDE_RANGE[0], _SIDE_RANGE[1] + 1, size=2)
    image = _render_background(rng, height, width)
    labels = np.full((height, width), -1, dtype=np.int32)  # index of the shape on top, -1: none
    shapes = []  # (class index, centre, radius, whole area, colour) per shape on the image
    num_shapes = rng.integers(_NUM_SHAPES_RANGE[0], _NUM_SHAPES_RANGE[1] + 1)
    for _ in range(num_shapes * _TRIES_PER_SHAPE):
        if len(shapes) == num_shapes:
            break
        class_index, centre, radius, polygons = _sample_shape(rng, height, width, shapes)
        mask = _rasterize(polygons, height, width)
        area = _polygons_area(polygons)
        if not _fits(mask, area, labels, [shape[3] for shape in shapes]):
            continue
        colour = _pick_colour(rng, image, labels, mask, [shape[4] for shape in shapes])
        _paint_shape(rng, image, mask, colour)
        labels[mask] = len(shapes)
        shapes.append((class_index, centre, radius, area, colour))
    return image, [(shape[0], labels == i) for i, shape in enumerate(shapes)]


def _render_background(rng, height, width):
    """
    (H, W, 3) uint8: a linear gradient between two random colours with soft blobs, drawn at
    1 / ``_BACKGROUND_DOWNSCALE`` of the resolution and upsampled bilinearly, then lines and noise.
    """
    small_size = (height // _BACKGROUND_DOWNSCALE + 1, width // _BACKGROUND_DOWNSCALE + 1)
    small = _linear_gradient(rng, *small_size, rng.uniform(0, 255, 3), rng.uniform(0, 255, 3))
    for _ in range(rng.integers(2, 7)):
        _add_soft_blob(rng, small)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    for _ in range(rng.integers(2, 9)):
        points = rng.uniform((0, 0), (width, height), size=(rng.integers(2, 5), 2)).astype(np.int32)
        colour = rng.uniform(0, 255, 3).tolist()
        cv2.polylines(image, [points], False, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
    image += rng.uniform(3, 12) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _linear_gradient(rng, height, width, start, end):
    """(H, W, 3) float32 going from colour ``start`` to ``end`` along a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[:height, :width].astype(np.float32)
    t = xs * np.cos(angle) + ys * np.sin(angle)
    t = (t - t.min()) / (t.max() - t.min())
    return (start + (end - start) * t[..., None]).astype(np.float32)


def _add_soft_blob(rng, image):
    """Blend, in place, a random colour through a blurred random ellipse into (H, W, 3) image."""
    height, width = image.shape[:2]
    alpha = np.zeros((height, width), np.float32)
    centre = tuple(int(v) for v in rng.uniform((0, 0), (width, height)))
    axes = tuple(int(v) for v in rng.uniform(1, 0.3 * min(height, width), 2))
    cv2.ellipse(alpha, centre, axes, rng.uniform(0, 180), 0, 360, rng.uniform(0.3, 0.8), -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=0.5 * max(axes) + 0.5)[..., None]
    image *= 1 - alpha
    image += alpha * rng.uniform(0, 255, 3).astype(np.float32)


def _sample_shape(rng, height, width, shapes):
    """
    Draw a shape: uniformly placed, or (with ``_SAME_CLASS_NEIGHBOUR_PROB``) of the class of a
    random earlier shape and with its circumscribed circle overlapping that shape's.

    Returns:
        class index, centre (x, y), circumradius, and the polygons of :func:`_outline` in pixels.
    """
    max_diameter = _MAX_DIAMETER_FRACTION * min(height, width)
    # Log-scale diameters skewed towards large ones, which placement rejects more often.
    radius = 0.5 * _MIN_DIAMETER * (max_diameter / _MIN_DIAMETER) ** (rng.random() ** 0.4)
    if shapes and rng.random() < _SAME_CLASS_NEIGHBOUR_PROB:
        class_index, anchor_centre, anchor_radius = shapes[rng.integers(len(shapes))][:3]
        direction = rng.uniform(0, 2 * np.pi)
        distance = (anchor_radius + radius) * rng.uniform(0.55, 0.95)
        centre = anchor_centre + distance * np.array([np.cos(direction), np.sin(direction)])
    else:
        class_index = int(rng.integers(len(THING_CLASSES)))
        centre = rng.uniform((0, 0), (width, height))
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    polygons = [p @ rotation.T * radius + centre for p in _outline(rng, THING_CLASSES[class_index])]
    return class_index, centre, radius, polygons


def _outline(rng, class_name):
    """
    Outline of a shape of circumradius 1 centred at the origin, as polygons ((K, 2) float arrays of
    (x, y) vertices): the first is the filled outline, the others are holes in it.
    """
    if class_name == "circle":
        return [_regular_polygon(_CIRCLE_VERTICES)]
    if class_name == "ring":
        circle = _regular_polygon(_CIRCLE_VERTICES)
        return [circle, rng.uniform(0.45, 0.65) * circle]
    if class_name == "triangle":
        angles = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.25, 0.25, 3)
        return [np.stack([np.cos(angles), np.sin(angles)], axis=1)]
    if class_name == "rectangle":
        half_diagonal_angle = np.arctan(rng.uniform(0.35, 1.0))  # short side / long side
        x, y = np.cos(half_diagonal_angle), np.sin(half_diagonal_angle)
        return [np.array([[x, y], [-x, y], [-x, -y], [x, -y]])]
    if class_name == "star":
        radii = np.tile([1.0, rng.uniform(0.38, 0.5)], 5)[:, None]
        return [radii * _regular_polygon(10)]
    raise ValueError(f"Unknown shape class {class_name!r}")


def _regular_polygon(num_vertices):
    """(num_vertices, 2) vertices of a regular polygon in the unit circle, the first at angle 0."""
    angles = np.arange(num_vertices) * (2 * np.pi / num_vertices)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _rasterize(polygons, height, width):
    """(H, W) bool mask of the pixels whose centres are in the first polygon but not the others."""
    mask = np.zeros((height, width), np.uint8)
    fixed_point = [np.round(p * 2**_POLYGON_SHIFT).astype(np.int32) for p in polygons]
    cv2.fillPoly(mask, fixed_point[:1], 1, cv2.LINE_8, _POLYGON_SHIFT)
    if len(fixed_point) > 1:
        cv2.fillPoly(mask, fixed_point[1:], 0, cv2.LINE_8, _POLYGON_SHIFT)
    return mask.astype(bool)


def _polygons_area(polygons):
    """Area, in square pixels, of the first polygon minus the others (its holes)."""
    areas = [cv2.contourArea(p.astype(np.float32)) for p in polygons]
    return areas[0] - sum(areas[1:])


def _fits(mask, area, labels, areas):
    """
    Whether a new shape (``mask``, whole ``area``) can go on top of the image's shapes (``labels``,
    their whole ``areas``), keeping each shape's visible area over the minimum.
    """
    visible = np.bincount(labels[labels >= 0], minlength=len(areas))
    visible -= np.bincount(labels[mask & (labels >= 0)], minlength=len(areas))
    visible = np.append(visible, mask.sum())
    minimum = np.maximum(_MIN_VISIBLE_AREA, _MIN_VISIBLE_FRACTION * np.append(areas, area))
    return bool(np.all(visible >= minimum))


def _pick_colour(rng, image, labels, mask, colours):
    """
    A random BGR colour (float (3,) array) at least ``_MIN_COLOUR_DISTANCE`` from the mean
    background around and under ``mask`` and from the colours of the shapes it touches, or else
    the farthest of a few random draws.
    """
    surroundings = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    neighbours = np.unique(labels[surroundings & (labels >= 0)])
    references = [colours[i] for i in neighbours]
    background = surroundings & (labels < 0)
    if background.any():
        references.append(image[background].mean(axis=0))
    candidates = rng.uniform(0, 255, size=(16, 3))
    distances = np.linalg.norm(candidates[:, None] - np.array(references)[None], axis=2).min(axis=1)
    far_enough = np.flatnonzero(distances >= _MIN_COLOUR_DISTANCE)
    return candidates[far_enough[0] if len(far_enough) else distances.argmax()]


def _paint_shape(rng, image, mask, colour):
    """
    Paint ``colour`` on the pixels of ``mask`` in (H, W, 3) uint8 ``image``, in place, shaded by a
    random linear gradient and, for some shapes, stripes, plus per-pixel noise.
    """
    ys, xs = np.nonzero(mask)
    angle, stripe_angle = rng.uniform(0, 2 * np.pi, 2)
    along = (xs - xs.mean()) * np.cos(angle) + (ys - ys.mean()) * np.sin(angle)
    shade = 1 + rng.uniform(0, 0.25) * along / max(np.abs(along).max(), 1)
    if rng.random() < 0.4:
        across = xs * np.cos(stripe_angle) + ys * np.sin(stripe_angle)
        shade += 0.15 * np.sin(across * (2 * np.pi / rng.uniform(4, 12)))
    values = colour * shade[:, None] + rng.normal(0, rng.uniform(2, 10), (len(xs), 3))
    image[ys, xs] = np.clip(values, 0, 255).astype(np.uint8)


register_yolact_shapes()
