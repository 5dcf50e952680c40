"""Hand-written RNN / LSTM / GRU forward passes (the homework forbids high-level APIs for the forward pass).

`ManualRNN` has exactly the parameters of `torch.nn.{RNN,LSTM,GRU}` (`weight_ih_l{k}`, `weight_hh_l{k}`,
`bias_ih_l{k}`, `bias_hh_l{k}`; gate order i,f,g,o for LSTM and r,z,n for GRU), created and initialised in the
same order, so a state_dict loads into either and the same seed gives the same starting weights.

Why the math lives in `layer_forward`: it works on tensors with any leading batch-of-models dims. The input
projection of all time steps is one matmul over (..., B*T, I); only the recurrent part loops over time. Give it
weights of shape (K, G*H, I) and inputs (K, B, T, I) and it trains K same-shaped models in one set of kernels
(issue 6); with no leading dims it is one ordinary model.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x (..., N, I) @ w (..., G, I)^T + b (..., G): a batched matmul when the leading dims are models."""
    return torch.matmul(x, w.transpose(-1, -2)) + b.unsqueeze(-2)


def layer_forward(
    cell: str, x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One layer over a whole sequence from a zero state.

    x: (..., B, T, I) batch-first. Returns (outputs (..., B, T, H), h_T (..., B, H), c_T for LSTM else None).
    """
    *lead, batch, steps, n_in = x.shape
    hidden = w_hh.shape[-1]
    # Input projection for every time step in one matmul (the part that does not depend on h).
    xs = _affine(x.reshape(*lead, batch * steps, n_in), w_ih, b_ih).reshape(*lead, batch, steps, -1)
    h = x.new_zeros(*lead, batch, hidden)
    c = x.new_zeros(*lead, batch, hidden) if cell == "lstm" else None
    outs = []
    for t in range(steps):
        xt = xs[..., t, :]
        hh = _affine(h, w_hh, b_hh)
        if cell == "rnn":
            h = torch.tanh(xt + hh)
        elif cell == "lstm":
            i, f, g, o = (xt + hh).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        elif cell == "gru":
            xr, xz, xn = xt.chunk(3, dim=-1)
            hr, hz, hn = hh.chunk(3, dim=-1)
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)  # r gates the recurrent term only, as in torch.nn.GRU
            h = (1 - z) * n + z * h
        else:
            raise ValueError(f"unknown cell {cell!r}; known: {', '.join(GATES)}")
        outs.append(h)
    return torch.stack(outs, dim=-2), h, c


class ManualRNN(nn.Module):
    """Drop-in for torch.nn.{RNN,LSTM,GRU}(input_size, hidden_size, num_layers, batch_first=True, dropout).

    forward(x (B,T,I)) -> (output (B,T,H), h_n (layers,B,H)) and for LSTM (output, (h_n, c_n)), like torch.
    Only zero initial states (all this project needs). Dropout acts between layers, in training mode, as in torch.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        if cell not in GATES:
            raise ValueError(f"unknown cell {cell!r}; known: {', '.join(GATES)}")
        self.cell, self.hidden_size, self.num_layers, self.dropout = cell, hidden_size, num_layers, dropout
        g = GATES[cell] * hidden_size
        for k in range(num_layers):  # registration order = torch's _flat_weights_names, so init order matches
            n_in = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}", nn.Parameter(torch.empty(g, n_in)))
            setattr(self, f"weight_hh_l{k}", nn.Parameter(torch.empty(g, hidden_size)))
            setattr(self, f"bias_ih_l{k}", nn.Parameter(torch.empty(g)))
            setattr(self, f"bias_hh_l{k}", nn.Parameter(torch.empty(g)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's RNNBase init: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)), in registration order."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -stdv, stdv)

    def forward(self, x: torch.Tensor):
        hs, cs = [], []
        for k in range(self.num_layers):
            if k > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, training=True)
            x, h, c = layer_forward(
                self.cell, x, getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"),
                getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}"),
            )
            hs.append(h)
            cs.append(c)
        h_n = torch.stack(hs)
        if self.cell == "lstm":
            return x, (h_n, torch.stack(cs))
        return x, h_n
