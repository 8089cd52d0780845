#!/usr/bin/env python
"""
Train and evaluate YOLACT (or, for comparison, any detectron2 model such as Mask R-CNN) with detectron2's
engine. Usage is detectron2's:

    python tools/train_net.py --config-file configs/embedded/yolact_R_18_shapes.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 2      # or, on CPUs: MODEL.DEVICE cpu --num-gpus 2

A COCO-format dataset of your own is registered by ``--dataset NAME JSON_FILE IMAGE_ROOT`` (repeatable):

    python tools/train_net.py --config-file ... --dataset my_train train.json train_images/ \
        --dataset my_val val.json val_images/ \
        DATASETS.TRAIN '("my_train",)' DATASETS.TEST '("my_val",)' MODEL.YOLACT.NUM_CLASSES 3
"""
import yolact_d2  # noqa: F401  (before detectron2: it imports detectron2 without avoidable warnings)
import detectron2.utils.comm as comm
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils.logger import setup_logger

from yolact_d2.config import load_yolact_config
from yolact_d2.data import add_dataset_argument, register_coco_dataset
from yolact_d2.engine import YolactCheckpointer, YolactTrainer


def setup(args):
    cfg = load_yolact_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, comm.get_rank(), name="yolact_d2")  # as default_setup does for detectron2's
    return cfg


def main(args):
    for name, json_file, image_root in args.dataset:  # in main: every process of `launch` needs them
        register_coco_dataset(name, json_file, image_root)
    cfg = setup(args)
    if args.eval_only:
        model = YolactTrainer.build_model(cfg)
        YolactCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = YolactTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = YolactTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = add_dataset_argument(default_argument_parser()).parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
