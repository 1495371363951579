"""A small decoder-only transformer (pre-LayerNorm, causal self-attention) for token tasks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from landscape.errors import check_int


class Block(nn.Module):
    """``x + attn(ln(x))`` then ``x + mlp(ln(x))``, causal attention written out (no fused
    kernels, so that ``torch.func`` transforms and per-sample gradients apply)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.reshape(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for z in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.n_heads)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        h = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(h)
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Token and position embeddings, ``n_layers`` blocks, a final LayerNorm and a linear
    head; ``forward(ids[B, T])`` gives the logits of the last position ``[B, num_outputs]``
    (the answer token of a task such as :func:`landscape.data` ``modadd``)."""

    def __init__(self, vocab: int, context: int, num_outputs: int, d_model: int = 32,
                 n_heads: int = 2, n_layers: int = 1) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d_model), nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*(Block(d_model, n_heads) for _ in range(n_layers)))
        self.ln, self.head = nn.LayerNorm(d_model), nn.Linear(d_model, num_outputs)

    def forward(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = self.blocks(self.tok(ids) + self.pos(positions))
        return self.head(self.ln(h[:, -1]))


def transformer(input_shape: tuple[int, ...], num_outputs: int, *, d_model: int = 32,
                n_heads: int = 2, n_layers: int = 1, vocab: int | None = None) -> Transformer:
    """A :class:`Transformer` for token sequences of length ``input_shape[0]``; ``vocab``
    defaults to ``num_outputs + 1`` (the answers plus one separator token, as ``modadd``)."""
    from landscape.errors import LandscapeError

    if len(input_shape) != 1:
        raise LandscapeError(f"the transformer takes token sequences (input shape [T]), got "
                             f"{tuple(input_shape)}")
    d_model = check_int("d_model", d_model)
    n_heads = check_int("n_heads", n_heads)
    if d_model % n_heads:
        raise LandscapeError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
    return Transformer(vocab or num_outputs + 1, int(input_shape[0]), num_outputs, d_model,
                       n_heads, check_int("n_layers", n_layers))
