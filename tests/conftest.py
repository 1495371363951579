"""Test-suite settings: tiny models run fastest on one thread, and no figure windows."""

import os

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
os.environ.setdefault("LANDSCAPE_QUIET", "1")
