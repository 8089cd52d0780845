from .trainer import AutocastTrainer, YolactTrainer, build_step_trainer, wrap_ddp
