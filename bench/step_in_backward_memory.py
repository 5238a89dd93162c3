"""Peak memory of a training step, measured at the allocator, with the optimizer step taken after
backward (normal) or inside it (tmsgd_kernels.step_in_backward), and the same run's step times.

Each configuration builds its model and optimizer inside a torch.profiler session with
profile_memory=True and trains a few steps; every allocation and free the CPU allocator reports
is replayed in time order, so "params" is what was allocated when the model was built and "peak"
the most that was allocated at once during the steps (the first creates the optimizer state).
Nothing is computed from shapes. "beyond params + activations" subtracts the peak of the same
steps with no optimizer at all (a hook frees each gradient as it is made), per parameter
element. Step times: torch.utils.benchmark over further steps of the same model, unprofiled.
"host_time": the same patterns over 161 params of 16 elements, where host time decides.

    python bench/step_in_backward_memory.py              # GPT-2 small (12 layers) and the CNN
    python bench/step_in_backward_memory.py --layers 2   # a shorter GPT-2 (quick look)

writes bench/results/step_in_backward_memory.json (or --out); --table prints the markdown
table of docs/STEP_IN_BACKWARD.md from it.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import torch
from machine import machine
from torch import nn
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils import benchmark

from tmsgd_kernels import TMSGD, step_in_backward

MOMENTUM = 0.9
LR = 1e-4


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln_2(x))))


class GPT2(nn.Module):
    """GPT-2 small's shapes (Radford et al. 2019): 50257 tokens, 1024 positions, width 768, 12
    heads, the output head tied to the token embedding; nn.Linear weights are (out, in)."""

    def __init__(self, layers: int = 12, d: int = 768, heads: int = 12) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(50257, d), nn.Embedding(1024, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)


def conv_net() -> nn.Module:
    """A ResNet-18-like stack without skips (11.2M params: 3x3 convs 64-512, batch norm)."""
    layers = [nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU()]
    width_in = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for repeat in range(2):
            for conv in range(2):
                first = repeat == 0 and conv == 0
                layers += [nn.Conv2d(width_in, width, 3, stride=stride if first else 1,
                                     padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                width_in = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))


def models(layers: int) -> dict:
    """name -> (model maker, batch maker, loss); the batches are drawn once per run."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 50257, (2, 65), generator=generator)
    images = torch.randn(8, 3, 128, 128, generator=generator)
    labels = torch.randint(0, 1000, (8,), generator=generator)

    def lm_loss(model):
        logits = model(tokens[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))

    return {
        f"gpt2-small-shaped ({layers} layers, 2 x 64 tokens)": (lambda: GPT2(layers), lm_loss),
        "conv (ResNet-18 shapes, 8 x 3 x 128 x 128)": (
            conv_net, lambda model: F.cross_entropy(model(images), labels)),
    }


def _sgd_in_backward(model, momentum):
    """The PyTorch tutorial's pattern: one torch.optim.SGD per param, stepped by its hook."""
    optimizers = {p: torch.optim.SGD([p], lr=LR, momentum=momentum) for p in model.parameters()}

    def hook(param):
        optimizers[param].step()
        optimizers[param].zero_grad(set_to_none=True)

    for param in model.parameters():
        param.register_post_accumulate_grad_hook(hook)
    return None


def _free_grads(model):
    return _free_grads_of(model.parameters())


def _tmsgd(in_backward, **options):
    def make(model):
        optimizer = TMSGD(model.parameters(), lr=LR, **options)
        if in_backward:
            step_in_backward(optimizer)
            return None
        return optimizer
    return make


# name -> a function of the model returning the optimizer to step after backward (None: the
# step happens inside backward, or not at all).
CONFIGS = {
    "no optimizer (gradients freed as made)": _free_grads,
    "SGD": lambda model: torch.optim.SGD(model.parameters(), lr=LR),
    "SGD momentum 0.9": lambda model: torch.optim.SGD(model.parameters(), lr=LR,
                                                      momentum=MOMENTUM),
    "SGD momentum 0.9, in backward (one SGD per param)": lambda model: _sgd_in_backward(
        model, MOMENTUM),
    "TMSGD, fp32 history": _tmsgd(False),
    "TMSGD, fp32 history, in backward": _tmsgd(True),
    "TMSGD, int8 history, in backward": _tmsgd(True, history_dtype=torch.int8),
    "TMSGD-M 0.9, fp32 history": _tmsgd(False, momentum=MOMENTUM),
    "TMSGD-M 0.9, fp32 history, in backward": _tmsgd(True, momentum=MOMENTUM),
    "TMSGD-M 0.9, int8 history": _tmsgd(False, momentum=MOMENTUM, history_dtype=torch.int8),
    "TMSGD-M 0.9, int8 history, in backward": _tmsgd(True, momentum=MOMENTUM,
                                                     history_dtype=torch.int8),
    "TMSGD-M 0.9, int8 history and momentum": _tmsgd(False, momentum=MOMENTUM,
                                                     history_dtype=torch.int8,
                                                     momentum_dtype=torch.int8),
    "TMSGD-M 0.9, int8 history and momentum, in backward": _tmsgd(
        True, momentum=MOMENTUM, history_dtype=torch.int8, momentum_dtype=torch.int8),
}


def _train_step(model, optimizer, loss_of) -> None:
    loss_of(model).backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _allocated_timeline(prof) -> tuple[list[tuple[int, int]], dict[str, tuple[int, int]]]:
    """(time, bytes allocated at that time) after every CPU allocator event, and the span of
    each record_function range."""
    events = list(prof.profiler.kineto_results.events())
    memory = sorted((e.start_ns(), e.nbytes()) for e in events
                    if e.name() == "[memory]" and str(e.device_type()) == "DeviceType.CPU")
    ranges = {e.name(): (e.start_ns(), e.end_ns()) for e in events if e.is_user_annotation()}
    timeline, total = [], 0
    for time, nbytes in memory:
        total += nbytes
        timeline.append((time, total))
    return timeline, ranges


def measure(make_model, loss_of, make_optimizer, steps: int) -> dict:
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with record_function("build"):
            torch.manual_seed(0)
            model = make_model()
            optimizer = make_optimizer(model)
        with record_function("steps"):
            for _ in range(steps):
                _train_step(model, optimizer, loss_of)
    timeline, ranges = _allocated_timeline(prof)
    built_end = ranges["build"][1]
    steps_start, steps_end = ranges["steps"]
    params = max((total for time, total in timeline if time <= built_end), default=0)
    peak = max(total for time, total in timeline if steps_start <= time <= steps_end)
    held = timeline[-1][1]
    elements = sum(p.numel() for p in model.parameters())
    timer = benchmark.Timer(stmt="step(model, optimizer, loss_of)",
                            globals={"step": _train_step, "model": model,
                                     "optimizer": optimizer, "loss_of": loss_of})
    timing = timer.blocked_autorange(min_run_time=4.0)
    result = {"elements": elements, "params_bytes": params, "peak_bytes": peak,
              "held_after_steps_bytes": held,
              "step_s_median": timing.median, "step_s_iqr": timing.iqr,
              "step_s_runs": len(timing.times)}
    del model, optimizer, prof
    gc.collect()
    return result


def _per_param_in_backward(params, make):
    """One optimizer per param, stepped by the param's hook (the tutorial's pattern)."""
    optimizers = {p: make([p]) for p in params}

    def hook(param):
        optimizers[param].step()
        optimizers[param].zero_grad(set_to_none=True)

    for param in params:
        param.register_post_accumulate_grad_hook(hook)


def host_time(tensors: int = 161, numel: int = 16) -> dict:
    """Median time of a training step (backward of sum(p * c) and the step) over many tiny
    params, where host time decides: the step in backward (one call for all, at the end of
    backward) against the normal step and the one-optimizer-per-param pattern."""
    def tmsgd(params):
        return TMSGD(params, lr=LR, momentum=MOMENTUM, backend="cpu")

    def sgd(params):
        return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, foreach=True)

    def tmsgd_in_backward(params):
        step_in_backward(tmsgd(params))  # the hooks keep the handle
        return None

    setups = {
        "backward only (gradients freed as made)": lambda p: _free_grads_of(p),
        "SGD-M foreach, normal step": sgd,
        "SGD-M, one per param in backward": lambda p: _per_param_in_backward(p, sgd),
        "TMSGD-M cpu, normal step": tmsgd,
        "TMSGD-M cpu, step_in_backward": tmsgd_in_backward,
        "TMSGD-M cpu, one per param in backward": lambda p: _per_param_in_backward(p, tmsgd),
    }
    coefficients = [torch.randn(numel) for _ in range(tensors)]
    result = {"tensors": tensors, "numel": numel}
    for name, setup in setups.items():
        params = [nn.Parameter(torch.randn(numel)) for _ in range(tensors)]
        optimizer = setup(params)

        def step(params=params, optimizer=optimizer):
            sum((p * c).sum() for p, c in zip(params, coefficients)).backward()
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        timing = benchmark.Timer(stmt="step()", globals={"step": step}).blocked_autorange(
            min_run_time=2.0)
        result[name] = {"step_us_median": timing.median * 1e6, "step_us_iqr": timing.iqr * 1e6}
        print(f"host time | {name}: {timing.median * 1e6:.0f} us", file=sys.stderr, flush=True)
    return result


def _free_grads_of(params):
    for param in params:
        param.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None))
    return None


def table(result: dict) -> str:
    """The docs' memory table (markdown) from a result file."""
    lines = []
    for model_name, rows in result["models"].items():
        elements = next(iter(rows.values()))["elements"]
        params = next(iter(rows.values()))["params_bytes"]
        lines += [f"**{model_name}**: {elements / 1e6:.1f}M params, "
                  f"{params / 2**20:.0f} MiB allocated for them.", "",
                  "| optimizer | peak MiB | peak - params, B/elem | beyond params + "
                  "activations, B/elem | step s (median, IQR) |",
                  "|---|---:|---:|---:|---:|"]
        for name, row in rows.items():
            lines.append(
                f"| {name} | {row['peak_bytes'] / 2**20:.0f} | "
                f"{row['peak_minus_params_B_per_elem']:.2f} | "
                f"{row['peak_beyond_params_and_activations_B_per_elem']:.2f} | "
                f"{row['step_s_median']:.2f} ({row['step_s_iqr']:.2f}) |")
        lines.append("")
    host = result["host_time"]
    lines += [f"**Host time**, {host['tensors']} params of {host['numel']} elements "
              f"(backward and step, median us):", "", "| pattern | us |", "|---|---:|"]
    lines += [f"| {name} | {row['step_us_median']:.0f} |" for name, row in host.items()
              if isinstance(row, dict)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "step_in_backward_memory.json")
    parser.add_argument("--table", action="store_true",
                        help="print the markdown table of an existing result file (--out)")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    result = {"machine": machine(), "lr": LR, "profiled_steps": args.steps, "models": {},
              "host_time": host_time()}
    for model_name, (make_model, loss_of) in models(args.layers).items():
        rows = {}
        for name, make_optimizer in CONFIGS.items():
            rows[name] = row = measure(make_model, loss_of, make_optimizer, args.steps)
            baseline = rows[next(iter(CONFIGS))]
            row["peak_beyond_params_and_activations_B_per_elem"] = (
                (row["peak_bytes"] - baseline["peak_bytes"]) / row["elements"])
            row["peak_minus_params_B_per_elem"] = (
                (row["peak_bytes"] - row["params_bytes"]) / row["elements"])
            print(f"{model_name} | {name}: peak {row['peak_bytes'] / 2**20:.0f} MiB, "
                  f"beyond params + activations "
                  f"{row['peak_beyond_params_and_activations_B_per_elem']:.2f} B/elem, "
                  f"step {row['step_s_median'] * 1e3:.0f} ms", file=sys.stderr, flush=True)
        result["models"][model_name] = rows
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
