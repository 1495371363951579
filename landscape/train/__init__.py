"""Training: optimizers, learning-rate schedules, the trainer and run directories.

``train(...)`` trains a model and keeps a run directory; ``load_run(dir)`` reads it back.
"""

from landscape.train.optimizers import OPTIMIZERS, make_optimizer
from landscape.train.run import Run, load_run
from landscape.train.schedules import SCHEDULES, Schedule, make_schedule
from landscape.train.trainer import DEFAULT_LR, evaluate, train

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "SCHEDULES", "Run", "Schedule", "evaluate", "load_run",
           "make_optimizer", "make_schedule", "train"]
