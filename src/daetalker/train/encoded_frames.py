"""Training frames as the latent-space DAE sees them: through the frozen first stage, encoded once.

The first stage never changes while the DAE trains, so each frame is encoded
once up front instead of at every visit: the loop then costs what a pixel DAE
on the same grid costs (docs/latent-dae.md). Stored as float16, 2 bytes per
grid value: 8 kB a frame at 32x32x4.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from daetalker.models.first_stage import FirstStage
from daetalker.train.frames_dataset import FramesDataset


class EncodedFrames(Dataset):
    """Item i of ``frames`` encoded: latent (C, L, L) float32, or (latent, mouth box (4,)) like ``frames``."""

    def __init__(self, frames: FramesDataset, first_stage: FirstStage, *, batch_size: int = 64, bf16: bool = False,
                 progress: bool = False) -> None:
        from tqdm.auto import tqdm

        from daetalker.models.device import autocast

        device = first_stage.shift.device
        chunks: list[torch.Tensor] = []
        boxes: list[torch.Tensor] = []
        for start in tqdm(range(0, len(frames), batch_size), desc="encode frames", disable=not progress,
                          mininterval=2.0):
            items = [frames[i] for i in range(start, min(len(frames), start + batch_size))]
            if frames.mouth_boxes:
                boxes += [box for _, box in items]
                items = [x for x, _ in items]
            with torch.no_grad(), autocast(device, bf16):
                chunks.append(first_stage.encode(torch.stack(items).to(device)).to("cpu", torch.float16))
        self.latents = torch.cat(chunks)  # (N, C, L, L)
        self.boxes = torch.stack(boxes) if boxes else None  # (N, 4)

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        latent = self.latents[index].float()
        return latent if self.boxes is None else (latent, self.boxes[index])
