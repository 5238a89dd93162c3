"""The benchmark cases: parameter lists a TM-SGD step runs over, built from published shapes (no
model library needed), and which of their tensors have a gradient at a step.

    flat-N       one fp32 buffer of N elements (64K to 64M on a CPU, to 1B on a GPU)
    resnet50     torchvision's resnet50: 161 tensors, 25.6M elements
    gpt2-small   GPT-2 small (Radford et al. 2019; HF layout, tied output): 148 tensors, 124M
    decoder-1b   a LLaMA-style decoder of 1.1B params (d 2048, 22 layers, SwiGLU 5632, vocab
                 32000, untied; TinyLlama's published shapes): GPU only
    tiny-161     161 tensors of 16 elements: the step's host (Python and dispatch) time
    moe-8x       a mixture-of-experts layer stack (8 experts of 2x(512x2048) per layer, 4 layers,
                 a router each): each step 2 of the 8 experts per layer have gradients
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Case:
    name: str
    shapes: tuple[tuple[int, ...], ...]
    # Indices of the tensors without a gradient at a step (MoE's idle experts): the optimizer
    # skips them, as it does a param whose .grad is None.
    idle: frozenset[int] = field(default_factory=frozenset)
    gpu_only: bool = False

    @property
    def elements(self) -> int:
        return sum(torch.Size(s).numel() for s in self.shapes)

    @property
    def stepped_elements(self) -> int:
        return sum(torch.Size(s).numel() for i, s in enumerate(self.shapes) if i not in self.idle)


def resnet50_shapes() -> list[tuple[int, ...]]:
    """torchvision's resnet50, in its parameter order: each conv has a batch norm (weight, bias)."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    channels = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for block in range(blocks):
            shapes += [(width, channels, 1, 1), (width,), (width,),
                       (width, width, 3, 3), (width,), (width,),
                       (4 * width, width, 1, 1), (4 * width,), (4 * width,)]
            if block == 0:  # the downsampling shortcut
                shapes += [(4 * width, channels, 1, 1), (4 * width,), (4 * width,)]
            channels = 4 * width
    return shapes + [(1000, 2048), (1000,)]


def gpt2_small_shapes() -> list[tuple[int, ...]]:
    d = 768
    shapes = [(50257, d), (1024, d)]  # token and position embeddings (the head is tied)
    for _ in range(12):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),
                   (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def decoder_1b_shapes() -> list[tuple[int, ...]]:
    d, hidden, layers, vocab, kv = 2048, 5632, 22, 32000, 256  # 4 kv heads of 64
    shapes = [(vocab, d)]
    for _ in range(layers):
        shapes += [(d,), (d, d), (kv, d), (kv, d), (d, d),
                   (d,), (hidden, d), (hidden, d), (d, hidden)]
    return shapes + [(d,), (vocab, d)]


def moe_case() -> Case:
    experts, layers, d, hidden, active = 8, 4, 512, 2048, 2
    shapes, idle = [], set()
    for _ in range(layers):
        shapes.append((experts, d))  # the router
        for expert in range(experts):
            if expert >= active:
                idle.update((len(shapes), len(shapes) + 1))
            shapes += [(hidden, d), (d, hidden)]
    return Case("moe-8x", tuple(shapes), frozenset(idle))


def flat(elements: int) -> Case:
    return Case(f"flat-{_short(elements)}", ((elements,),), gpu_only=elements > 1 << 26)


def _short(elements: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if elements % size == 0:
            return f"{elements // size}{unit}"
    return str(elements)


FLAT_SIZES = [1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26, 1 << 28, 1 << 30]
MODEL_CASES = {
    "resnet50": Case("resnet50", tuple(resnet50_shapes())),
    "gpt2-small": Case("gpt2-small", tuple(gpt2_small_shapes())),
    "decoder-1b": Case("decoder-1b", tuple(decoder_1b_shapes()), gpu_only=True),
    "tiny-161": Case("tiny-161", tuple((16,) for _ in range(161))),
    "moe-8x": moe_case(),
}


def all_cases(on_gpu: bool) -> list[Case]:
    cases = [flat(n) for n in FLAT_SIZES] + list(MODEL_CASES.values())
    return [c for c in cases if on_gpu or not c.gpu_only]
