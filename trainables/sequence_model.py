"""The COVID classifier as K independent models in one module: recurrent encoder -> last hidden state -> 2 logits.

Model k is exactly the model a single run with seed `seeds[k]` would build: its parameters are drawn from its own
generator in torch.nn's order and bounds (every RNN weight and bias, then the linear head, ~U(-1/sqrt(H), 1/sqrt(H))),
so where a model sits in the stack never changes what it is. The forward pass is the homework's own code
(`trainables.stacked_rnn`, no torch.nn recurrent module), batched over the K models.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from trainables.stacked_rnn import GATES, stacked_layer

RNN_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class StackedClassifier(nn.Module):
    """forward(x (T, K, B, F)) -> logits (K, B, 2); parameters carry a leading K (models) dim."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float,
                 seeds: list[int]):
        super().__init__()
        if cell not in GATES:
            raise ValueError(f"unknown cell {cell!r}; known: {', '.join(GATES)}")
        self.cell, self.input_size, self.hidden_size = cell, input_size, hidden_size
        self.num_layers, self.dropout, self.seeds = num_layers, dropout, list(seeds)
        k, g = len(self.seeds), GATES[cell] * hidden_size
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size
            for name, shape in zip(RNN_PARAMS, ((g, n_in), (g, hidden_size), (g,), (g,))):
                self.register_parameter(f"{name}_l{layer}", nn.Parameter(torch.empty(k, *shape)))
        self.head_weight = nn.Parameter(torch.empty(k, 2, hidden_size))
        self.head_bias = nn.Parameter(torch.empty(k, 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for k, seed in enumerate(self.seeds):
                gen = torch.Generator().manual_seed(int(seed))
                for p in self.parameters():  # registration order: torch.nn.RNN's, then the head's weight, bias
                    p[k].copy_(torch.empty(p.shape[1:]).uniform_(-bound, bound, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                h = F.dropout(h, self.dropout, training=True)
            weights = [getattr(self, f"{name}_l{layer}") for name in RNN_PARAMS]
            h = stacked_layer(self.cell, h, *weights, last_only=layer == self.num_layers - 1)
        if self.dropout > 0 and self.training:  # also with one layer, where torch's RNN dropout does nothing
            h = F.dropout(h, self.dropout, training=True)
        return torch.baddbmm(self.head_bias.unsqueeze(1), h, self.head_weight.transpose(1, 2))

    def torch_state(self, k: int) -> dict[str, torch.Tensor]:
        """Model k as torch.nn names (`rnn.weight_ih_l0`, ..., `head.weight`), e.g. to load into torch.nn.GRU."""
        names = {f"rnn.{name}_l{layer}": f"{name}_l{layer}" for layer in range(self.num_layers) for name in RNN_PARAMS}
        names |= {"head.weight": "head_weight", "head.bias": "head_bias"}
        return {key: getattr(self, attr)[k].detach().clone() for key, attr in names.items()}

    def extra_repr(self) -> str:
        per_model = sum(p[0].numel() for p in self.parameters())
        lines = [f"{len(self.seeds)} x {self.cell.upper()}(input {self.input_size}, hidden {self.hidden_size}, "
                 f"{self.num_layers} layer{'s' if self.num_layers > 1 else ''}"
                 + (f", dropout {self.dropout} between layers and before the head" if self.dropout else "")
                 + ") -> last hidden state -> Linear(hidden, 2)"]
        lines += [f"{name}: {tuple(p.shape[1:])} per model" for name, p in self.named_parameters()]
        lines.append(f"{per_model:,} parameters per model")
        return "\n".join(lines)
