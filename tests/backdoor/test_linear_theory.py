"""Why bias transfers (thesis §7.1): fine-tuning never moves weights orthogonal to the target data,
and weight decay shrinks them geometrically. Exact, in float64."""

import torch


def finetune(w, x, y, steps, lr, wd):
    w = w.clone()
    for _ in range(steps):
        grad = ((torch.sigmoid(x @ w) - y)[:, None] * x).mean(0)
        w -= lr * (grad + wd * w)
    return w


def test_trigger_direction_outside_the_target_span_survives_without_weight_decay():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 50, generator=generator, dtype=torch.float64)
    y = (torch.rand(20, generator=generator, dtype=torch.float64) > 0.5).double()
    basis = torch.linalg.qr(x.T, mode="complete").Q  # first 20 columns span the targets
    u = basis[:, 30]  # a trigger direction orthogonal to every target point
    w_src = torch.randn(50, generator=generator, dtype=torch.float64) + 3 * u
    tuned = finetune(w_src, x, y, steps=200, lr=0.5, wd=0.0)
    assert abs(float(tuned @ u - w_src @ u)) < 1e-10
    assert float((tuned - w_src).norm()) > 0.1  # the in-span part did move
    lr, wd, steps = 0.5, 0.01, 200
    decayed = finetune(w_src, x, y, steps=steps, lr=lr, wd=wd)
    assert abs(float(decayed @ u) - (1 - lr * wd) ** steps * float(w_src @ u)) < 1e-9
