from .trainer import AutocastTrainer, YolactTrainer, build_adamw, build_step_trainer, wrap_ddp
