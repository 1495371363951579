"""Training: optimizers, learning-rate schedules and the trainer.

``train(...)`` trains a model and keeps a run directory (:mod:`landscape.runs` reads it back).
"""

from landscape.training.evaluation import evaluate
from landscape.training.optimizers import OPTIMIZERS, make_optimizer
from landscape.training.schedules import SCHEDULES, Schedule, make_schedule
from landscape.training.trainer import DEFAULT_LR, train

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "SCHEDULES", "Schedule", "evaluate", "make_optimizer",
           "make_schedule", "train"]
