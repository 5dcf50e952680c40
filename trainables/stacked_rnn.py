"""K independent RNN / LSTM / GRU layers trained as one: parameters stacked on a leading K dim, backward by hand.

Why by hand: a trial trains one config under several seeds and two splits, K small models of the same shape.
Stacked, their per-step matmuls become one batched matmul, so K models cost about as many kernel launches as one.
Through autograd, though, each time step of hand-written cells (an earlier version of this module) records a dozen
nodes and the graph bookkeeping, not the arithmetic, dominated: K=6 GRUs of hidden 32 trained only 1.2x faster
than six `torch.nn.GRU`s one after another on a 2-core CPU. Here each forward step is a few tensor ops writing
into preallocated buffers; the GRU's backward first computes, for all steps at once, the factors it multiplies
each step's incoming gradient by, so each backward step is one broadcast multiply and one batched matmul; the
weight gradients are one batched matmul over all steps. Measured on a 2-core CPU and kept: tanh costs three
times a sigmoid, so the GRU takes tanh(a) = 2 sigmoid(2a) - 1; a batched matmul whose output has one or two
columns is 20x slower than its transpose, so weight gradients are taken as inputs^T @ gate gradients; the
factors computed per step in the forward loop cost more than over all steps after it. Without grad
(evaluation) nothing is saved.

Layout is time-major: x (T, K, B, I), outputs (T, K, B, H). Parameters follow torch.nn.{RNN,LSTM,GRU} per model
(weight_ih (K, G*H, I), weight_hh (K, G*H, H), bias_ih / bias_hh (K, G*H); gate order i,f,g,o for LSTM and r,z,n
for GRU), so model k's slices load into torch's modules and back. Zero initial state, as the classifier needs.
`tests/test_stacked_rnn.py` checks outputs and every gradient against torch.nn in float64, and gradcheck.
"""
from __future__ import annotations

import torch

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _input_projection(x: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (T,K,B,I) @ w_ih[k]^T + bias[k] for every step at once -> (T,K,B,G): the part that does not depend on h.

    One input feature is an outer product, a multiply (a matmul with an inner size of one is far slower); more
    are one batched matmul per model over all steps, returned as a time-major view."""
    steps, k, batch, n_in = x.shape
    if n_in == 1:
        return torch.addcmul(bias[None, :, None, :], x, w_ih[None, :, None, :, 0])
    xk = x.transpose(0, 1).reshape(k, steps * batch, n_in)
    return torch.baddbmm(bias[:, None, :], xk, w_ih.transpose(1, 2)).view(k, steps, batch, -1).transpose(0, 1)


def _gru_forward(x, w_ih, w_hh, b_ih, b_hh, hs, save: bool):
    """GRU steps into hs; with save, what the backward needs: r and z, n, 2 (W_hn h + b_hn).

    tanh(a) is taken as 2 sigmoid(2a) - 1, so the n rows of the weights and biases enter doubled."""
    steps, hidden = x.shape[0], w_hh.shape[-1]
    h2 = 2 * hidden
    two = torch.ones(3 * hidden, dtype=x.dtype, device=x.device)
    two[h2:] = 2
    # r and z take both biases in the projection; n's recurrent bias sits inside r * (W_hn h + b_hn).
    gi = _input_projection(x, w_ih * two[:, None], torch.cat([b_ih[:, :h2] + b_hh[:, :h2], 2 * b_ih[:, h2:]], 1))
    w_hrz_t, w_hn2_t = w_hh[:, :h2].transpose(1, 2), (2 * w_hh[:, h2:]).transpose(1, 2)
    b_hn2 = 2 * b_hh[:, None, h2:]
    rz = torch.empty(*gi.shape[:-1], h2, dtype=x.dtype, device=x.device)
    ghn2, n = torch.empty_like(hs[1:]), torch.empty_like(hs[1:])   # 2 (W_hn h + b_hn); tanh of n's pre-activation
    h_, gi_rz, gi_n = hs.unbind(0), gi[..., :h2].unbind(0), gi[..., h2:].unbind(0)
    rz_, r_, z_, ghn_, n_ = rz.unbind(0), rz[..., :hidden].unbind(0), rz[..., hidden:].unbind(0), ghn2.unbind(0), n.unbind(0)
    minus_one = torch.tensor(-1.0, dtype=x.dtype, device=x.device)
    for t in range(steps):  # two matmuls, not one for all gates and an add: measured faster
        h, nt = h_[t], n_[t]
        torch.baddbmm(gi_rz[t], h, w_hrz_t, out=rz_[t]).sigmoid_()
        torch.baddbmm(b_hn2, h, w_hn2_t, out=ghn_[t])
        torch.addcmul(gi_n[t], r_[t], ghn_[t], out=nt).sigmoid_()
        torch.add(minus_one, nt, alpha=2, out=nt)
        torch.lerp(nt, h, z_[t], out=h_[t + 1])  # (1 - z) * n + z * h
    return (rz, n, ghn2) if save else ()


def _gru_factors(hs, rz, n, ghn2):
    """What the incoming gradient dh of each step is multiplied by, (T, 4, K, B, H): the r, z, n_h (recurrent n)
    and n (input n) pre-activations' gradients. d n = dh a with a = (1-z)(1-n^2); d z = dh (h-n) z(1-z);
    d r = dh a ghn r(1-r); n_h = dh a r. Over all steps at once, after the forward loop (measured: faster than
    per step)."""
    hidden = n.shape[-1]
    r, z = rz[..., :hidden], rz[..., hidden:]
    coef = torch.empty(n.shape[0], 4, *n.shape[1:], dtype=n.dtype, device=n.device)
    one, zero = (torch.tensor(v, dtype=n.dtype, device=n.device) for v in (1.0, 0.0))
    q = torch.addcmul(rz, rz, rz, value=-1)                     # r(1-r), z(1-z)
    a = torch.addcmul(one, n, n, value=-1, out=coef[:, 3])
    a.addcmul_(z, a, value=-1)
    torch.mul(hs[:-1] - n, q[..., hidden:], out=coef[:, 1])
    torch.mul(a, r, out=coef[:, 2])
    torch.addcmul(zero, ghn2 * q[..., :hidden], a, value=0.5, out=coef[:, 0])
    return coef


def _gru_backward(grad_out, last_only: bool, hs, rz, n, ghn2, w_hh):
    """Gradients of the r, z, n_h (recurrent n) and n (input n) pre-activations, model-major (K, T, B, 4H)."""
    coef = _gru_factors(hs, rz, n, ghn2)
    steps, _, k, batch, hidden = coef.shape
    dgk = torch.empty(k, steps, batch, 4 * hidden, dtype=coef.dtype, device=coef.device)
    dg_ = dgk.view(k, steps, batch, 4, hidden).permute(1, 3, 0, 2, 4).unbind(0)  # step t: (4, K, B, H) view
    dgh_ = dgk[..., : 3 * hidden].transpose(0, 1).unbind(0)                       # step t: (K, B, 3H) view
    coef_, z_ = coef.unbind(0), rz[..., hidden:].unbind(0)
    dh = None
    for t in reversed(range(steps)):
        dh = _incoming(grad_out, last_only, t, steps, dh)
        torch.mul(dh, coef_[t], out=dg_[t])
        dh = torch.baddbmm(dh * z_[t], dgh_[t], w_hh)
    return dgk


def _incoming(grad_out, last_only: bool, t: int, steps: int, carry):
    if last_only:
        return grad_out if t == steps - 1 else carry
    return grad_out[t] if carry is None else carry + grad_out[t]


class _Layer(torch.autograd.Function):
    """One stacked layer over the whole sequence; returns every step's h (T,K,B,H), or only the last (K,B,H)."""

    @staticmethod
    def forward(ctx, cell: str, last_only: bool, x, w_ih, w_hh, b_ih, b_hh):  # noqa: D102 - see the class
        hs, saved = _forward(cell, x, w_ih, w_hh, b_ih, b_hh, save=True)
        ctx.cell, ctx.last_only = cell, last_only
        ctx.save_for_backward(x, w_ih, w_hh, hs, *saved)
        return hs[-1].clone() if last_only else hs[1:]

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102 - see the class
        x, w_ih, w_hh, hs, *saved = ctx.saved_tensors
        cell, hidden = ctx.cell, w_hh.shape[-1]
        steps, k, batch = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        if cell == "gru":
            dgk = _gru_backward(grad_out, ctx.last_only, hs, *saved, w_hh)
        else:
            dgk = _rnn_lstm_backward(cell, grad_out, ctx.last_only, hs, saved, w_hh)
        # weight gradients: contract over (t, b) per model; inputs^T @ gradients (not the transpose: see the top)
        need, n_rows = ctx.needs_input_grad, steps * batch
        flat = dgk.view(k, n_rows, -1)
        cols_i = [slice(0, 2 * hidden), slice(3 * hidden, 4 * hidden)] if cell == "gru" else [slice(None)]
        cols_h = slice(0, 3 * hidden) if cell == "gru" else slice(None)
        dx = dw_ih = db_ih = dw_hh = db_hh = None
        if need[2]:
            rows = [w_ih[:, : 2 * hidden], w_ih[:, 2 * hidden:]] if cell == "gru" else [w_ih]
            dxk = sum(torch.bmm(flat[..., c], w) for c, w in zip(cols_i, rows))
            dx = dxk.view(k, steps, batch, -1).transpose(0, 1)
        if need[3]:
            xk = x.transpose(0, 1).reshape(k, n_rows, -1)     # (K, T*B, I): a copy of the (small) input
            g = torch.bmm(xk.transpose(1, 2), flat)            # (K, I, G')
            dw_ih = torch.cat([g[..., c] for c in cols_i], -1).transpose(1, 2).contiguous()
        if need[4]:
            hk = hs[:-1].transpose(0, 1).reshape(k, n_rows, hidden)
            dw_hh = torch.bmm(hk.transpose(1, 2), flat[..., cols_h]).transpose(1, 2).contiguous()
        if need[5] or need[6]:
            sums = flat.sum(1)
            db_ih = torch.cat([sums[:, c] for c in cols_i], -1) if need[5] else None
            db_hh = sums[:, cols_h].contiguous() if need[6] else None
        return None, None, dx, dw_ih, dw_hh, db_ih, db_hh


def _forward(cell: str, x, w_ih, w_hh, b_ih, b_hh, save: bool):
    """(hs (T+1,K,B,H) with hs[0] the zero state, what the backward needs: () without save)."""
    steps, k, batch, _ = x.shape
    hidden = w_hh.shape[-1]
    hs = x.new_zeros(steps + 1, k, batch, hidden)
    if cell == "gru":
        return hs, _gru_forward(x, w_ih, w_hh, b_ih, b_hh, hs, save)
    w_hh_t = w_hh.transpose(1, 2)
    gi = _input_projection(x, w_ih, b_ih + b_hh)
    h_, gi_ = hs.unbind(0), gi.unbind(0)
    if cell == "rnn":
        for t in range(steps):
            torch.tanh(torch.baddbmm(gi_[t], h_[t], w_hh_t), out=h_[t + 1])
        return hs, ()
    gates = torch.empty(gi.shape, dtype=x.dtype, device=x.device)
    cs = x.new_zeros(steps + 1, k, batch, hidden)
    tc = torch.empty(steps, k, batch, hidden, dtype=x.dtype, device=x.device)
    gates_, cs_, tc_ = gates.unbind(0), cs.unbind(0), tc.unbind(0)
    for t in range(steps):
        g = torch.baddbmm(gi_[t], h_[t], w_hh_t, out=gates_[t])
        g[..., : 2 * hidden].sigmoid_()
        g[..., 2 * hidden: 3 * hidden].tanh_()
        g[..., 3 * hidden:].sigmoid_()
        i, f, gg, o = g.split(hidden, dim=-1)
        torch.addcmul(f * cs_[t], i, gg, out=cs_[t + 1])
        torch.tanh(cs_[t + 1], out=tc_[t])
        torch.mul(o, tc_[t], out=h_[t + 1])
    return hs, ((gates, cs, tc) if save else ())


def _rnn_lstm_backward(cell: str, grad_out, last_only: bool, hs, saved, w_hh):
    """Gradients of the gate pre-activations, model-major (K, T, B, G)."""
    steps, k, batch, hidden = hs.shape[0] - 1, *hs.shape[1:]
    dgk = torch.empty(k, steps, batch, GATES[cell] * hidden, dtype=hs.dtype, device=hs.device)
    dg = dgk.transpose(0, 1)
    dh = None
    if cell == "rnn":
        dtanh = 1 - hs[1:] ** 2
        for t in reversed(range(steps)):
            dh = _incoming(grad_out, last_only, t, steps, dh)
            torch.mul(dh, dtanh[t], out=dg[t])
            dh = torch.bmm(dg[t], w_hh)
        return dgk
    gates, cs, tc = saved
    i, f, g, o = gates.split(hidden, dim=-1)
    # Everything but the incoming gradient, for all steps at once: d gate pre-activation = dc * p (i, f, g).
    p_ifg = torch.cat([g * i * (1 - i), cs[:-1] * f * (1 - f), i * (1 - g * g)], dim=-1)
    p_ifg = p_ifg.view(*p_ifg.shape[:-1], 3, hidden)
    p_o = tc * o * (1 - o)
    q = o * (1 - tc * tc)
    dc = None
    for t in reversed(range(steps)):
        dh = _incoming(grad_out, last_only, t, steps, dh)
        torch.mul(dh, p_o[t], out=dg[t, ..., 3 * hidden:])
        dc = dh * q[t] if dc is None else torch.addcmul(dc, dh, q[t])
        torch.mul(dc.unsqueeze(-2), p_ifg[t], out=dg[t, ..., : 3 * hidden].view(*dc.shape[:-1], 3, hidden))
        dc = dc * f[t]
        dh = torch.bmm(dg[t], w_hh)
    return dgk


def stacked_layer(cell: str, x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
                  b_hh: torch.Tensor, last_only: bool = False) -> torch.Tensor:
    """K layers at once from a zero state: x (T,K,B,I) -> every step's h (T,K,B,H), or h_T (K,B,H) if last_only."""
    if cell not in GATES:
        raise ValueError(f"unknown cell {cell!r}; known: {', '.join(GATES)}")
    inputs = (x, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return _Layer.apply(cell, last_only, *inputs)
    hs, _ = _forward(cell, *inputs, save=False)
    return hs[-1] if last_only else hs[1:]
