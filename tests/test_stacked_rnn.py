"""The hand-written backward of the stacked layers against torch.nn and against numerical gradients."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.stacked_rnn import GATES, stacked_layer

TORCH = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _params(cell: str, k: int, n_in: int, hidden: int, gen: torch.Generator) -> list[torch.Tensor]:
    g = GATES[cell] * hidden
    shapes = [(k, g, n_in), (k, g, hidden), (k, g), (k, g)]
    return [torch.empty(s, dtype=torch.float64).uniform_(-0.6, 0.6, generator=gen).requires_grad_() for s in shapes]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("n_in", [1, 3])  # one input feature takes its own projection path
def test_stacked_layer_matches_torch_nn_per_model(cell, last_only, n_in):
    """Each of the K models gives torch.nn's outputs and gradients (inputs, every weight, every bias)."""
    gen = torch.Generator().manual_seed(0)
    k, batch, steps, hidden = 3, 4, 6, 5
    params = _params(cell, k, n_in, hidden, gen)
    x = torch.randn(steps, k, batch, n_in, dtype=torch.float64, generator=gen, requires_grad=True)
    out = stacked_layer(cell, x, *params, last_only=last_only)
    weight = torch.randn(out.shape, dtype=torch.float64, generator=gen)  # a loss that uses every output
    (out * weight).sum().backward()
    for m in range(k):
        ref = TORCH[cell](n_in, hidden, batch_first=False).double()
        with torch.no_grad():
            for name, p in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), params):
                getattr(ref, name).copy_(p[m])
        xm = x.detach()[:, m].clone().requires_grad_()
        seq, _ = ref(xm)
        ref_out = seq[-1] if last_only else seq
        torch.testing.assert_close(out[..., m, :, :] if last_only else out[:, m], ref_out, rtol=1e-10, atol=1e-12)
        (ref_out * (weight[m] if last_only else weight[:, m])).sum().backward()
        torch.testing.assert_close(x.grad[:, m], xm.grad, rtol=1e-9, atol=1e-11)
        for name, p in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), params):
            torch.testing.assert_close(p.grad[m], getattr(ref, name).grad, rtol=1e-9, atol=1e-11, msg=f"{cell} {name}")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_stacked_layer_gradcheck(cell):
    gen = torch.Generator().manual_seed(1)
    params = _params(cell, 2, 2, 3, gen)
    x = torch.randn(4, 2, 3, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: stacked_layer(cell, *a), (x, *params))
    assert torch.autograd.gradcheck(lambda *a: stacked_layer(cell, *a, last_only=True), (x, *params))


def test_models_are_independent():
    """A loss on model 0 alone leaves every other model's gradients at exactly zero."""
    gen = torch.Generator().manual_seed(2)
    params = _params("gru", 3, 1, 4, gen)
    x = torch.randn(5, 3, 2, 1, dtype=torch.float64, generator=gen)
    stacked_layer("gru", x, *params, last_only=True)[0].sum().backward()
    for p in params:
        assert p.grad[0].abs().sum() > 0
        assert torch.equal(p.grad[1:], torch.zeros_like(p.grad[1:]))


def test_unknown_cell_is_refused():
    with pytest.raises(ValueError, match="unknown cell"):
        stacked_layer("transformer", torch.zeros(1, 1, 1, 1), *[torch.zeros(1, 1, 1)] * 2, *[torch.zeros(1, 1)] * 2)


def test_outputs_without_grad_equal_those_with_grad():
    """Evaluation takes the path that saves nothing for a backward; it must compute the same thing."""
    gen = torch.Generator().manual_seed(3)
    for cell in GATES:
        params = _params(cell, 2, 2, 4, gen)
        x = torch.randn(5, 2, 3, 2, dtype=torch.float64, generator=gen)
        with torch.no_grad():
            plain = stacked_layer(cell, x, *params)
        assert torch.equal(plain, stacked_layer(cell, x, *params).detach())
