from .checkpoint import YolactCheckpointer, write_atomically
from .predictor import YolactPredictor
from .trainer import AutocastTrainer, YolactTrainer, build_adamw, build_step_trainer, wrap_ddp
