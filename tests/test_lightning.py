"""A trainer that takes an optimizer: Lightning with bf16-mixed precision and gradient clipping
(which Lightning refuses for optimizers that unscale inside their step) trains with TMSGD exactly
as the same loop written by hand."""

from __future__ import annotations

import copy

import pytest
import torch

from tmsgd_kernels import TMSGD

lightning = pytest.importorskip("lightning")

STEPS = 4
CLIP = 0.5


def _data() -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(8 * STEPS, 6, generator=generator)
    targets = torch.randn(8 * STEPS, 1, generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets),
                                       batch_size=8, shuffle=False)


class Regression(lightning.LightningModule):
    def __init__(self, model: torch.nn.Module, backend: str) -> None:
        super().__init__()
        self.model = model
        self.backend = backend

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.model(x), y)

    def configure_optimizers(self):
        return TMSGD(self.model.parameters(), lr=0.05, momentum=0.9, backend=self.backend)


def test_bf16_mixed_with_gradient_clipping_equals_hand_written_loop(backend, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    by_hand = copy.deepcopy(model)
    trainer = lightning.Trainer(
        accelerator="cpu", devices=1, precision="bf16-mixed", gradient_clip_val=CLIP,
        max_steps=STEPS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(Regression(model, backend), train_dataloaders=_data())

    optimizer = TMSGD(by_hand.parameters(), lr=0.05, momentum=0.9, backend=backend)
    for x, y in _data():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(by_hand(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(by_hand.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad()
    for trained, expected in zip(model.parameters(), by_hand.parameters()):
        assert torch.equal(trained, expected)
