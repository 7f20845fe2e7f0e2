"""Whisper's audio encoder in plain torch, loaded from a CTranslate2 ``WhisperSpec`` model.bin.

log-mel (B, 80, 2N) -> conv1d k3 + GELU -> conv1d k3 stride 2 + GELU -> (B, N, D)
+ sinusoidal positions [:N] -> pre-LN Transformer blocks (self-attention, MLP
4D with GELU) -> final LayerNorm -> (B, N, D), one frame per 20 ms. Whisper was
trained on 30 s windows, so N <= ``n_ctx`` (1500) per call.

Only the encoder's variables are read (``encoder/...``); the decoder stays on disk.
CTranslate2 stores the attention's q, k, v projections fused in one linear
(``linear_0``, rows q then k then v) and a zero bias for k, which Whisper lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from daetalker.errors import AssetError
from daetalker.models.ctranslate2_file import CT2Model, read_ct2


@dataclass(frozen=True)
class WhisperEncoderSize:
    n_mels: int = 80
    d_model: int = 384
    heads: int = 6
    layers: int = 4
    n_ctx: int = 1500  # positions = encoder frames of 30 s


class EncoderBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_ln = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.mlp_ln = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.attn_ln(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D/H)
        x = x + self.out(h.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    def __init__(self, size: WhisperEncoderSize = WhisperEncoderSize()) -> None:
        super().__init__()
        self.size = size
        d = size.d_model
        self.conv1 = nn.Conv1d(size.n_mels, d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(size.n_ctx, d))
        self.blocks = nn.ModuleList(EncoderBlock(d, size.heads) for _ in range(size.layers))
        self.ln_post = nn.LayerNorm(d)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, 2N) Whisper log-mel -> (B, N, d_model); N <= n_ctx."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, N, D)
        n = x.shape[1]
        if n > self.size.n_ctx:
            raise ValueError(f"{n} encoder frames > {self.size.n_ctx} positions: encode at most 30 s per call")
        x = x + self.positions[:n].to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


def _size_of(model: CT2Model) -> WhisperEncoderSize:
    if model.spec != "WhisperSpec":
        raise AssetError(f"{model.path}: a {model.spec} model, not a Whisper one (WhisperSpec)")
    layers = 0
    while f"encoder/layer_{layers}/ffn/linear_0/weight" in model:
        layers += 1
    n_ctx, d = model.get("encoder/position_encodings/encodings").shape
    return WhisperEncoderSize(n_mels=int(model.get("encoder/conv1/weight").shape[1]), d_model=int(d),
                              heads=int(model.get("encoder/num_heads")), layers=layers, n_ctx=int(n_ctx))


def _state_dict(model: CT2Model, size: WhisperEncoderSize) -> dict[str, torch.Tensor]:
    """CTranslate2 names -> this module's names (values as float32)."""
    names = {"conv1.weight": "conv1/weight", "conv1.bias": "conv1/bias", "conv2.weight": "conv2/weight",
             "conv2.bias": "conv2/bias", "positions": "position_encodings/encodings",
             "ln_post.weight": "layer_norm/gamma", "ln_post.bias": "layer_norm/beta"}  # fmt: skip
    per_block = {"attn_ln.weight": "self_attention/layer_norm/gamma", "attn_ln.bias": "self_attention/layer_norm/beta",
                 "qkv.weight": "self_attention/linear_0/weight", "qkv.bias": "self_attention/linear_0/bias",
                 "out.weight": "self_attention/linear_1/weight", "out.bias": "self_attention/linear_1/bias",
                 "mlp_ln.weight": "ffn/layer_norm/gamma", "mlp_ln.bias": "ffn/layer_norm/beta",
                 "mlp.0.weight": "ffn/linear_0/weight", "mlp.0.bias": "ffn/linear_0/bias",
                 "mlp.2.weight": "ffn/linear_1/weight", "mlp.2.bias": "ffn/linear_1/bias"}  # fmt: skip
    for i in range(size.layers):
        names.update({f"blocks.{i}.{ours}": f"layer_{i}/{theirs}" for ours, theirs in per_block.items()})
    return {ours: torch.from_numpy(np.asarray(model.get(f"encoder/{theirs}"), np.float32))
            for ours, theirs in names.items()}


def whisper_encoder_from_ct2(model: CT2Model) -> WhisperEncoder:
    """The encoder of a parsed CTranslate2 Whisper model, float32, in eval mode, frozen."""
    size = _size_of(model)
    encoder = WhisperEncoder(size)
    state = _state_dict(model, size)
    for name, ours in encoder.state_dict().items():
        if state[name].shape != ours.shape:
            raise AssetError(f"{model.path}: encoder/{name} has shape {tuple(state[name].shape)}, "
                             f"the encoder expects {tuple(ours.shape)}")  # fmt: skip
    encoder.load_state_dict(state, strict=True)
    return encoder.eval().requires_grad_(False)


def load_whisper_encoder(path: Path | str) -> WhisperEncoder:
    """The Whisper encoder of a CTranslate2 ``model.bin`` file."""
    return whisper_encoder_from_ct2(read_ct2(path))
