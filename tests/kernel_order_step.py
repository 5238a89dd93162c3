"""The native kernels' arithmetic (csrc/tmsgd_update.h) as torch elementwise ops, for params with
an 8-bit history: the reference their codes, scales, params, buffers and counts equal bit for bit.

Every operation is one torch op on fp32 tensors (scalars as 0-dim fp32 tensors, converted as the
kernels convert them), so each is rounded once, as in the kernels, which are built without
multiply-add contraction. The torch implementation (torch_step.py) is not that reference: its
torch.add(..., alpha=) is a fused multiply-add on CPUs with FMA, so it agrees with the kernels
only to rounding. The history (and an 8-bit momentum buffer) is decoded and encoded by the
reference encoder (tmsgd_kernels/int8_history.py), with d_new laid out like its param.
"""

from __future__ import annotations

import torch

from tmsgd_kernels import int8_history
from tmsgd_kernels.step_contract import StepScalars

F32 = torch.float32


def _f32(value: float) -> torch.Tensor:
    """A scalar as the kernels hold it: rounded once to fp32."""
    return torch.tensor(value, dtype=torch.float64).to(F32)


def step(params, grads, delta_even, delta_odd, delta_even_scales, delta_odd_scales,
         momentum_buffers, momentum_scales, steps, scalars: StepScalars, grad_scale=None,
         found_inf=None) -> None:
    """One call of the contract (counts on the CPU or not), in place."""
    if found_inf is not None and found_inf.item() != 0:
        return
    lr = _f32(scalars.lr if scalars.lr_tensor is None else scalars.lr_tensor.item())
    b1, b2 = _f32(scalars.b1), _f32(scalars.b2)
    momentum, decay = _f32(scalars.momentum), _f32(scalars.weight_decay)
    gain = _f32(1.0 - scalars.dampening)  # formed in double, rounded once (update_scalars)
    for i, p in enumerate(params):
        count = int(steps[i])
        w = p.float()
        # The kernels read a grad in its param's layout; every result below keeps that layout.
        u = torch.empty_like(p, dtype=F32).copy_(grads[i])
        if grad_scale is not None:
            u = u / _f32(grad_scale.item())
        if scalars.maximize:
            u = torch.zeros_like(u) - u
        if scalars.weight_decay != 0:
            u = u + decay * w
        if momentum_buffers:
            if count == 0:
                buf = u
            else:
                old = (int8_history.decode(momentum_buffers[i], momentum_scales[i])
                       if momentum_scales else momentum_buffers[i].float())
                buf = old * momentum + u * gain
            if momentum_scales:  # stored rounded; the step goes on with the fp32 buffer
                int8_history.encode_into(buf, momentum_buffers[i], momentum_scales[i])
            else:
                momentum_buffers[i].copy_(buf)
            u = u + buf * momentum if scalars.nesterov else buf
        odd = count % 2 == 1
        codes2, codes1 = (delta_odd[i], delta_even[i]) if odd else (delta_even[i], delta_odd[i])
        scales2, scales1 = ((delta_odd_scales[i], delta_even_scales[i]) if odd
                            else (delta_even_scales[i], delta_odd_scales[i]))
        if count >= scalars.switch_step:
            d1 = int8_history.decode(codes1, scales1)
            d2 = int8_history.decode(codes2, scales2)
            d_new = d1 * b1 + d2 * b2 - u * lr
        else:
            d_new = torch.zeros_like(u) - u * lr
        p.copy_(w + d_new)
        int8_history.encode_into(d_new, codes2, scales2)
        steps[i] += 1
