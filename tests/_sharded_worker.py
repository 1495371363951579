"""Run under torchrun (2 gloo ranks) or alone: top-3 eigenvalues, Hutchinson trace and
sharpness of a tiny float64 MLP with the data sharded among the ranks; rank 0 writes JSON."""

import json
import sys

import torch
from torch import nn

import landscape
from landscape import distributed
from landscape.objective import Objective

distributed.init_from_env()
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
g = torch.Generator().manual_seed(1)
x, y = torch.randn(41, 4, generator=g, dtype=torch.float64), torch.randint(3, (41,), generator=g)
obj = Objective(model, (x, y), precision="float64", device="cpu", batch_size=7,
                shard=True)
top = landscape.hessian_eigenvalues(obj, k=3, tol=1e-10).eigenvalues.tolist()
trace = landscape.hessian_trace(obj, method="hutchinson", max_probes=20, min_probes=20,
                                rtol=1e-12, seed=3)
eps = landscape.epsilon_sharpness(obj, eps=1e-3).value
sam = landscape.sam_sharpness(obj, rho=0.05).value
noise = landscape.gradient_noise(obj, batch_size=4).value
if distributed.rank_and_world()[0] == 0:
    json.dump({"top": top, "trace": trace.estimate, "eps": eps, "sam": sam, "noise": noise,
               "sharded": obj.sharded}, open(sys.argv[1], "w"))
