"""Optimizer configurations by name, and how to build one (with its lr schedule) for a run.

A configuration fixes everything but the learning rate: the update rule, momentum, Nesterov,
multistep coefficients, warm-up (the paper's switch epoch, as a fraction of the step budget) and
the schedule. Baselines use torch.optim; every multistep rule runs through ``TMSGD``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from tmsgd_kernels import TMSGD

PAPER = (0.5, -0.5)  # the paper's (b1, b2) in delta form: coefficients (1.5, -1, 0.5)


@dataclass(frozen=True)
class OptConfig:
    name: str
    rule: str  # "sgd" (torch.optim.SGD), "multistep" (TMSGD) or "adam"
    momentum: float = 0.0
    nesterov: bool = False
    b: tuple[float, float] = (0.0, 0.0)  # delta-form (b1, b2) of a multistep rule
    warmup: float = 0.0  # fraction of the steps taken as plain SGD before the multistep update
    schedule: str = "constant"  # "constant" or "cosine" (to zero over the run)

    @property
    def coefficients(self) -> tuple[float, float, float]:
        """(a0, a1, a2) of W[k+1] = a0 W[k] + a1 W[k-1] + a2 W[k-2] - lr u[k]."""
        b1, b2 = self.b
        return (1.0 + b1, b2 - b1, -b2)

    def label(self) -> str:
        return LABELS.get(self.name, self.name)


def _sgd(name: str, m: float = 0.0, nesterov: bool = False, **kw: object) -> OptConfig:
    return OptConfig(name, "sgd", momentum=m, nesterov=nesterov, **kw)  # type: ignore[arg-type]


def _tm(name: str, m: float = 0.0, b: tuple[float, float] = PAPER, **kw: object) -> OptConfig:
    return OptConfig(name, "multistep", momentum=m, b=b, **kw)  # type: ignore[arg-type]


MOMENTA = (0.8, 0.9, 0.95)
# The paper's switch epochs as fractions of training: keypoints 5/20, GAN 50/120, CTR 15/20,
# text 100/120. Table 2's image-classification row (switch 75 of 10 epochs) is not a fraction.
WARMUPS = (0.25, 0.42, 0.75, 0.83)
PAPER_WARMUP = {"keypoints": 0.25, "gan2d": 0.42, "ctr_widedeep": 0.75, "ctr_fair": 0.75,
                "lstm_seq": 0.83, "digits_cnn": 0.75, "insteval": 0.75}

# Multistep coefficient candidates beyond the paper (item 7 of issue 15), fixed before any run:
# zero-stable (b1, b2) pairs with b2 != 0 (b2 = 0 is heavy ball, already a baseline), two with
# real roots, one with complex ones, and a momentum variant of the mildest.
CANDIDATES: dict[str, tuple[tuple[float, float], float]] = {
    "ms_real_pos": ((0.3, 0.3), 0.0),  # roots 0.72, -0.42: a two-step memory
    "ms_complex": ((1.2, -0.4), 0.0),  # roots 0.6 +- 0.2i: damped oscillating memory
    "ms_lead": ((0.25, -0.25), 0.0),  # half the paper's history terms: milder look-ahead
    "ms_lead_m": ((0.25, -0.25), 0.9),  # the same with momentum 0.9
}


def _registry() -> dict[str, OptConfig]:
    cfgs = [_sgd("sgd"), OptConfig("adam", "adam"), _tm("tmsgd")]
    for m in MOMENTA:
        cfgs += [_sgd(f"sgdm{m:g}", m), _sgd(f"nesterov{m:g}", m, True), _tm(f"tmsgdm{m:g}", m)]
    cfgs += [_tm(f"tmsgd_w{round(100 * w)}", warmup=w) for w in WARMUPS]
    cfgs += [_sgd("sgd_cos", schedule="cosine"), _tm("tmsgd_cos", schedule="cosine")]
    cfgs += [_tm(f"tmsgd_cos_w{round(100 * w)}", warmup=w, schedule="cosine") for w in WARMUPS]
    cfgs += [_tm(name, m, b) for name, (b, m) in CANDIDATES.items()]
    return {c.name: c for c in cfgs}


CONFIGS: dict[str, OptConfig] = _registry()
LABELS: dict[str, str] = {
    "sgd": "SGD", "adam": "Adam", "tmsgd": "TM-SGD", "sgdm": "SGD-M", "nesterov": "Nesterov",
    "tmsgdm": "TM-SGD-M", "tmsgd_warm": "TM-SGD + warm-up", "sgd_cos": "SGD + cosine",
    "tmsgd_cos": "TM-SGD + cosine", "multistep": "best other multistep",
}


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    steps: int,
    adam_betas: tuple[float, float] = (0.9, 0.999),
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """Optimizer ``name`` at base rate ``lr`` for a run of ``steps`` steps, and its scheduler
    (call ``step()`` after every optimizer step) or None for a constant rate."""
    cfg = CONFIGS[name]
    params = list(params)
    if cfg.rule == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov
        )
    elif cfg.rule == "adam":
        opt = torch.optim.Adam(params, lr=lr, betas=adam_betas)
    else:
        opt = TMSGD(params, lr=lr, momentum=cfg.momentum, coefficients=cfg.coefficients,
                    switch_step=int(round(cfg.warmup * steps)))
    if cfg.schedule == "constant":
        return opt, None
    # cosine from lr to 0 over the run (the torchvision reference recipes' schedule)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, steps) / steps))
    )
    return opt, sched
