from .trainer import YolactTrainer, wrap_ddp
