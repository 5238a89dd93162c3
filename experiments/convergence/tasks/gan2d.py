"""A small GAN on a 2-D mixture of eight Gaussians on a ring (stand-in for the paper's shoe GAN).

Generator and discriminator are small MLPs trained with the non-saturating loss, one D step and
one G step per iteration, both with the optimizer under test at the same lr. Metrics: the 2-D
Wasserstein-1 distance between 500 generated and 500 real points (exact optimal assignment;
lower is better, the primary metric), the number of modes covered (of 8) and the fraction of
high-quality samples (within 3 sigma of a mode), each averaged over the last three evaluations
(the last 20% of training) because GAN metrics oscillate from one evaluation to the next.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..optimizers import make_optimizer
from ..spec import RunSpec
from ..train_loop import N_EVALS

N_MODES, RADIUS, STD, Z_DIM, BATCH, N_EVAL = 8, 1.0, 0.05, 4, 128, 500
ADAM_BETAS = (0.5, 0.999)  # the usual GAN setting; default betas failed to fit this mixture
N_FINAL = 3  # the final metric averages the last 3 evaluations: GAN metrics oscillate
MODES = np.array(
    [[RADIUS * math.cos(2 * math.pi * k / N_MODES), RADIUS * math.sin(2 * math.pi * k / N_MODES)]
     for k in range(N_MODES)]
)


def sample_real(n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` points from the ring mixture."""
    idx = torch.randint(0, N_MODES, (n,), generator=gen)
    centres = torch.as_tensor(MODES, dtype=torch.float32)[idx]
    return centres + STD * torch.randn(n, 2, generator=gen)


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    """Exact W1 between two equal-size point clouds (uniform weights) by optimal assignment."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    cost = cdist(a, b)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def mode_stats(points: np.ndarray) -> tuple[int, float]:
    """(modes covered, fraction of high-quality samples); a mode counts when it holds at least a
    quarter of its fair share of the high-quality samples."""
    dist = np.linalg.norm(points[:, None, :] - MODES[None], axis=2)
    nearest, good = dist.argmin(1), dist.min(1) < 3 * STD
    counts = np.bincount(nearest[good], minlength=N_MODES)
    return int((counts >= 0.25 * len(points) / N_MODES).sum()), float(good.mean())


def _mlp(n_in: int, n_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n_in, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, n_out)
    )


class GAN2D:
    name = "gan2d"
    category = "Image generation (paper: Sneakers shoes, GAN, FID)"
    metric_name = "test W1 distance (x100)"
    higher_is_better = False
    steps_full = 800
    steps_quick = 80

    def run(self, spec: RunSpec) -> dict[str, Any]:
        torch.manual_seed(spec.seed)
        g_net, d_net = _mlp(Z_DIM, 2), _mlp(2, 1)
        g_opt, g_sched = make_optimizer(
            spec.optimizer, g_net.parameters(), spec.lr, spec.steps, ADAM_BETAS
        )
        d_opt, d_sched = make_optimizer(
            spec.optimizer, d_net.parameters(), spec.lr, spec.steps, ADAM_BETAS
        )
        gen = torch.Generator().manual_seed(1_000_003 * (spec.seed + 1))
        eval_seed = 11 if spec.split == "val" else 22  # fixed reference sets per split
        eval_gen = torch.Generator().manual_seed(eval_seed)
        real_eval = sample_real(N_EVAL, eval_gen).numpy()
        z_eval = torch.randn(N_EVAL, Z_DIM, generator=eval_gen)
        bce = nn.functional.binary_cross_entropy_with_logits
        ones, zeros = torch.ones(BATCH, 1), torch.zeros(BATCH, 1)
        eval_every = max(1, spec.steps // N_EVALS)
        curves: dict[str, list[float]] = {
            "step": [], "train_loss": [], "d_loss": [], "eval_metric": [], "modes": [], "hq": []
        }

        def evaluate(step: int, g_loss: float, d_loss: float) -> bool:
            with torch.no_grad():
                fake = g_net(z_eval).numpy()
            ok = bool(np.isfinite(fake).all()) and float(np.abs(fake).max()) < 1e4
            w1 = 100.0 * wasserstein1(fake, real_eval) if ok else float("nan")
            modes, hq = mode_stats(fake) if ok else (0, 0.0)
            for key, value in zip(curves, (step, g_loss, d_loss, w1, modes, hq)):
                curves[key].append(value)
            return ok

        evaluate(0, float("nan"), float("nan"))
        g_sum = d_sum = 0.0
        count, diverged = 0, False
        for step in range(1, spec.steps + 1):
            real = sample_real(BATCH, gen)
            z = torch.randn(BATCH, Z_DIM, generator=gen)
            fake = g_net(z)
            d_opt.zero_grad(set_to_none=True)
            d_loss = bce(d_net(real), ones) + bce(d_net(fake.detach()), zeros)
            d_loss.backward()
            d_opt.step()
            g_opt.zero_grad(set_to_none=True)
            g_loss = bce(d_net(fake), ones)
            g_loss.backward()
            g_opt.step()
            for sched in (g_sched, d_sched):
                if sched is not None:
                    sched.step()
            gl, dl = float(g_loss.detach()), float(d_loss.detach())
            if not (math.isfinite(gl) and math.isfinite(dl)):
                diverged = True
                break
            g_sum, d_sum, count = g_sum + gl, d_sum + dl, count + 1
            if step % eval_every == 0 or step == spec.steps:
                if not evaluate(step, g_sum / count, d_sum / count):
                    diverged = True
                    break
                g_sum = d_sum = 0.0
                count = 0
        if diverged:
            return {"curves": curves, "final_metric": None, "diverged": True, "extra": {}}
        final = float(np.mean(curves["eval_metric"][-N_FINAL:]))
        extra = {
            "modes": float(np.mean(curves["modes"][-N_FINAL:])),
            "hq": float(np.mean(curves["hq"][-N_FINAL:])),
            "last_eval_metric": curves["eval_metric"][-1],
        }
        return {"curves": curves, "final_metric": final, "diverged": diverged, "extra": extra}


TASK = GAN2D()
