#!/usr/bin/env python
"""
Run YOLACT (or any detectron2 instance segmentation model) on images, a video or a webcam, and draw its
instances (masks, boxes, class names and scores) with detectron2's Visualizer. Flags are detectron2's demo's:

    python tools/demo.py --config-file configs/embedded/yolact_R_18_shapes.yaml \\
        --input photo.jpg images/ 'more/*.png' --output out/ --opts MODEL.WEIGHTS model_final.pth
    python tools/demo.py --config-file ... --video-input clip.mp4 --output clip_out.mp4 --opts MODEL.WEIGHTS ...
    python tools/demo.py --config-file ... --webcam --opts MODEL.WEIGHTS ...    # in a window: needs a display
    python tools/demo.py --config-file ... --dataset my_val val.json val_images/ --input val_images/ \\
        --json-output detections.json --opts DATASETS.TEST '("my_val",)' MODEL.YOLACT.NUM_CLASSES 3 MODEL.WEIGHTS ...

* ``--input`` takes image files, glob patterns and folders (the images directly inside, sorted by name). Config
  overrides come last: ``--opts KEY VALUE ...`` (detectron2's demo), or the pairs alone after an option with one
  value or after ``--``.
* ``--output`` is a file when it names one (it has an extension) and there is one image or a video, else a
  folder (the input's name; ``.mp4`` for videos); missing folders are created. Videos are written with the
  mp4v codec. Without ``--output`` nor ``--json-output`` the results are shown in a window, which needs a
  display: otherwise the demo stops at once with a message.
* ``--precision {float32,bfloat16,float16}`` sets ``MODEL.YOLACT.PRECISION`` (also settable with ``--opts``): the
  network runs in bfloat16 (CPUs with AVX512-BF16 or AMX, recent GPUs) or float16 (CUDA), the post-processing
  in float32. YOLACT configs only.
* ``--confidence-threshold`` sets ``MODEL.YOLACT.POSTPROCESS.SCORE_THRESH`` and drops instances scoring less.
* ``--dataset NAME JSON_FILE IMAGE_ROOT`` (repeatable) registers a COCO-format dataset; the class names drawn
  are those of ``DATASETS.TEST[0]``, whose class count must match the config's.
* ``--json-output FILE`` writes the detections of every image (or frame) in COCO's results format, loadable and
  evaluated by pycocotools (``COCO.loadRes``, ``COCOeval``) against the ground truth json of ``DATASETS.TEST[0]``:
  ``image_id`` is the image's id in that json when every input is one of its images, else the position of the
  image among the inputs (in command-line order, folders and glob matches sorted by name), from 1, unreadable
  images counted, or of the frame in the video, from 1; ``file_name`` the image (or the video, ``webcam``);
  ``category_id`` is the dataset's id of the class when the metadata of ``DATASETS.TEST[0]`` has
  ``thing_dataset_id_to_contiguous_id`` (COCO, ``--dataset``), else the class index + 1; ``bbox`` is XYWH in
  pixels; ``segmentation`` a compressed RLE with ``counts`` as str, or with ``--mask-format polygon`` a list of
  ``[x1, y1, x2, y2, ...]`` polygons (:func:`yolact_d2.utils.instances_to_coco_dicts`); ``score``; for YOLACT++
  ``mask_score``, the score of the mask (``score`` is the box's).

Unreadable images are reported by name and skipped. Exit status: 0 when at least one image (or frame) was
processed, even if others could not be read; 1 when none was, or the demo could not start (no display to show
the results, a video that cannot be opened, an input that does not exist); 2 for invalid arguments.
"""
import yolact_d2  # noqa: F401  (before detectron2: it imports detectron2 without avoidable warnings)
import argparse
import collections
import glob
import json
import logging
import os
import re
import sys
import time

import cv2
import tqdm

from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import Visualizer

from yolact_d2.config import add_config_arguments, config_overrides, load_yolact_config
from yolact_d2.data import add_dataset_argument, read_image, register_coco_dataset
from yolact_d2.data.build import check_num_classes, config_num_classes
from yolact_d2.engine import YolactPredictor
from yolact_d2.layers import PRECISIONS
from yolact_d2.utils import coco_category_ids, coco_image_ids, instances_to_coco_dicts

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
WINDOW_NAME = "YOLACT"
ESC_KEY = 27

logger = logging.getLogger("detectron2.demo")


def get_parser():
    parser = argparse.ArgumentParser(description="YOLACT demo: draw the instances found in images or videos")
    add_config_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, glob patterns such as 'dir/*.jpg', or folders")
    source.add_argument("--video-input", metavar="FILE", help="path to a video file")
    source.add_argument("--webcam", action="store_true", help="take frames from the webcam")
    parser.add_argument(
        "--output",
        help="a file or folder to save the visualizations to; without it they are shown in a window",
    )
    parser.add_argument("--json-output", metavar="FILE", help="write the detections in COCO results format")
    parser.add_argument(
        "--mask-format",
        choices=["rle", "polygon"],
        default="rle",
        help="masks in --json-output: compressed RLE (default) or polygons",
    )
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.5, help="minimum score of the instances shown"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="precision of YOLACT's network (MODEL.YOLACT.PRECISION; default: the config's)",
    )
    add_dataset_argument(parser)
    return parser


def setup_cfg(args):
    """The config of the file and ``opts``, with the confidence threshold and precision; checks the class count."""
    cfg = load_yolact_config(args.config_file, config_overrides(args))
    if args.precision:
        if args.precision != "float32" and cfg.MODEL.META_ARCHITECTURE != "YOLACT":
            sys.exit(f"--precision {args.precision} sets MODEL.YOLACT.PRECISION, which "
                     f"{cfg.MODEL.META_ARCHITECTURE} models ignore: they run in float32")
        cfg.MODEL.YOLACT.PRECISION = args.precision
    cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = args.confidence_threshold
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.freeze()
    if len(cfg.DATASETS.TEST):
        check_num_classes(cfg, cfg.DATASETS.TEST[:1])
    return cfg


class InstancePredictor:
    """
    :class:`YolactPredictor` (detectron2's DefaultPredictor for any image) keeping the instances that score at
    least a threshold, with the metadata of ``DATASETS.TEST[0]`` and its conversion to COCO results.
    """

    def __init__(self, cfg, confidence_threshold: float, mask_format: str = "rle"):
        self.predictor = YolactPredictor(cfg)
        self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
        self.confidence_threshold = confidence_threshold
        self.mask_format = mask_format
        self.class_ids = coco_category_ids(self.metadata, config_num_classes(cfg))

    def __call__(self, image):
        """The instances, on the CPU, of a (H, W, 3) uint8 BGR image."""
        instances = self.predictor(image)["instances"].to("cpu")
        return instances[instances.scores >= self.confidence_threshold]

    def coco_results(self, instances, image_id: int, file_name: str):
        """The instances as COCO results, with the dataset's category ids (see the module's docstring)."""
        return instances_to_coco_dicts(instances, image_id, self.mask_format, self.class_ids, file_name)


def has_display() -> bool:
    """Whether cv2.imshow can open a window: OpenCV has a GUI backend and, on Linux, X11 or Wayland runs."""
    gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if gui is None or gui.group(1).upper() == "NONE":
        return False
    return not sys.platform.startswith("linux") or any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY"))


def list_images(inputs):
    """The files named by ``--input``: files, glob matches and the images directly in folders, without repeats."""
    paths = []
    for pattern in inputs:
        pattern = os.path.expanduser(pattern)
        matches = [pattern] if os.path.exists(pattern) else sorted(glob.glob(pattern))
        if not matches:
            sys.exit(f"--input {pattern}: no such file or folder, and no file matches it")
        for path in matches:
            paths += _images_in(path) if os.path.isdir(path) else [path]
    if not paths:
        sys.exit(f"--input {' '.join(inputs)}: no image found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return list(dict.fromkeys(paths))


def _images_in(folder):
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def _is_folder(output: str) -> bool:
    """Whether ``--output`` names a folder: an existing one, or a path without a file extension."""
    return os.path.isdir(output) or not os.path.splitext(output)[1]


def _make_parent(path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def image_output_paths(paths, output):
    """Where the visualization of each image goes: ``output`` for one image, else ``output/<input's name>``."""
    if len(paths) == 1 and not _is_folder(output):
        return [_make_parent(output)]
    names = [os.path.basename(p) for p in paths]
    clashes = [n for n, count in collections.Counter(names).items() if count > 1]
    if clashes:
        sys.exit(f"Several inputs are named {clashes}: their visualizations would overwrite each other in {output}")
    os.makedirs(output, exist_ok=True)
    return [os.path.join(output, n) for n in names]


def _bgr(picture):
    """The BGR array of a Visualizer's output (VisImage)."""
    return cv2.cvtColor(picture.get_image(), cv2.COLOR_RGB2BGR)


def _show(picture, wait_ms: int) -> bool:
    """Show a BGR picture in the window; False when the user pressed Esc to quit."""
    cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    cv2.imshow(WINDOW_NAME, picture)
    return cv2.waitKey(wait_ms) != ESC_KEY


def _report_speed(count: int, unit: str, start: float) -> None:
    seconds = time.perf_counter() - start
    logger.info(f"{count} {unit} in {seconds:.2f} s: {count / max(seconds, 1e-9):.2f} {unit}/s (reading to writing)")


def run_on_images(predictor, paths, output, results, show):
    """
    Predict, draw and write (or show) each image, and append its COCO results to ``results`` (unless None).
    Unreadable images are reported and skipped. Returns the number of images processed.
    """
    outputs = image_output_paths(paths, output) if output else [None] * len(paths)
    processed, failed, start = 0, [], time.perf_counter()
    image_ids = coco_image_ids(paths, predictor.metadata) if results is not None else [None] * len(paths)
    for image_id, path, out in tqdm.tqdm(list(zip(image_ids, paths, outputs)), disable=len(paths) == 1):
        try:  # upright by EXIF, 3 channels (gray replicated, alpha dropped), 8 bits
            image = read_image(path, "BGR")
        except (OSError, ValueError) as e:
            logger.error(f"{e}: skipped")
            failed.append(path)
            continue
        t0 = time.perf_counter()
        instances = predictor(image)
        processed += 1
        logger.info(f"{path}: detected {len(instances)} instances in {time.perf_counter() - t0:.2f}s")
        if results is not None:
            results += predictor.coco_results(instances, image_id, path)
        if out or show:
            picture = _bgr(Visualizer(image[:, :, ::-1], predictor.metadata).draw_instance_predictions(instances))
        if out and not cv2.imwrite(out, picture):
            raise OSError(f"Cannot write {out}")
        if show and not _show(picture, 0):
            break
    if failed:
        logger.warning(f"{len(failed)} of {len(paths)} images could not be read: {', '.join(failed)}")
    _report_speed(processed, "images", start)
    return processed


def _frames(capture):
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def open_video_writer(output, source_name, capture):
    """A mp4v VideoWriter at ``output`` (a file, or a folder for ``<source_name>.mp4``) for the capture's frames."""
    path = os.path.join(output, source_name + ".mp4") if _is_folder(output) else output
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(_make_parent(path), cv2.VideoWriter_fourcc(*"mp4v"), fps if fps > 0 else 30.0, size)
    if not writer.isOpened():
        sys.exit(f"Cannot write the video {path} with the mp4v codec")
    logger.info(f"Writing the video to {path}")
    return writer


def run_on_video(predictor, capture, writer, results, show, source: str):
    """
    Predict and draw each frame of a capture (with a VideoVisualizer) and write (or show) it, until the video ends
    or Esc or Ctrl-C; append its COCO results to ``results`` (unless None), ``source`` (the video's path, or
    "webcam") as their ``file_name``. Returns the number of frames processed.
    """
    visualizer = VideoVisualizer(predictor.metadata)
    num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    count, start = 0, time.perf_counter()
    try:
        frames = tqdm.tqdm(_frames(capture), total=num_frames if num_frames > 0 else None)
        for frame_id, frame in enumerate(frames, 1):
            instances = predictor(frame)
            if results is not None:
                results += predictor.coco_results(instances, frame_id, source)
            if writer or show:
                picture = _bgr(visualizer.draw_instance_predictions(frame[:, :, ::-1], instances))
            if writer:
                writer.write(picture)
            count = frame_id
            if show and not _show(picture, 1):
                break
    except KeyboardInterrupt:
        logger.info("Interrupted")
    _report_speed(count, "frames", start)
    return count


def run_on_capture(predictor, args, results, show):
    """Open the video (or the webcam) and, with ``--output``, a video writer, and run on its frames."""
    capture = cv2.VideoCapture(0 if args.webcam else args.video_input)
    if not capture.isOpened():
        sys.exit(
            "Cannot open the webcam (camera 0): no camera is present, or it is in use"
            if args.webcam
            else f"Cannot open the video {args.video_input}"
        )
    source_name = "webcam" if args.webcam else os.path.splitext(os.path.basename(args.video_input))[0]
    writer = open_video_writer(args.output, source_name, capture) if args.output else None
    try:
        return run_on_video(predictor, capture, writer, results, show, "webcam" if args.webcam else args.video_input)
    finally:
        capture.release()
        if writer:
            writer.release()


def write_json(path, results):
    with open(_make_parent(path), "w") as f:
        json.dump(results, f)
    logger.info(f"Wrote {len(results)} detections in COCO results format to {path}")


def main(args) -> int:
    """Run the demo; returns the exit status (see the module's docstring)."""
    setup_logger(name="fvcore")
    setup_logger()
    logger.info(f"Arguments: {args}")
    show = not args.output and not args.json_output
    if show and not has_display():
        sys.exit(
            "Showing the results needs a display, and there is none (OpenCV without GUI, or no DISPLAY / "
            "WAYLAND_DISPLAY): give --output (a file or folder; a .mp4 file for --webcam or --video-input) to "
            "write them, or --json-output to save the detections"
        )
    for name, json_file, image_root in args.dataset:
        register_coco_dataset(name, json_file, image_root)
    cfg = setup_cfg(args)
    predictor = InstancePredictor(cfg, args.confidence_threshold, args.mask_format)
    logger.info(f"Class names: {predictor.metadata.get('thing_classes', 'none (classes are drawn by index)')}")
    results = [] if args.json_output else None
    if args.input:
        processed = run_on_images(predictor, list_images(args.input), args.output, results, show)
    else:
        processed = run_on_capture(predictor, args, results, show)
    if show:
        cv2.destroyAllWindows()
    if args.json_output:
        write_json(args.json_output, results)
    return 0 if processed else 1


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
