"""Pluggable speech features for speech2latent: log-mel by default, Whisper tiny.en's encoder
(``whisper-tiny``, a pinned asset) or a local wav2vec 2.0 / HuBERT optionally.

Every extractor maps a 16 kHz mono waveform of ``L`` samples to
``L * frames_per_video_frame // 640`` feature frames, so feature frames
``k i .. k i + k - 1`` belong to video frame ``i`` at 25 fps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from daetalker.assets import ASSETS, asset_path
from daetalker.config.preprocess import LOG_MEL, PreprocessConfig
from daetalker.config.s2l import S2LConfig
from daetalker.errors import AssetError, ConfigError
from daetalker.features.log_mel import log_mel

from daetalker.timebase import SAMPLE_RATE
from daetalker.timebase import SAMPLES_PER_FRAME as SAMPLES_PER_VIDEO_FRAME


@runtime_checkable
class SpeechFeatureExtractor(Protocol):
    name: str
    frames_per_video_frame: int
    dim: int

    def __call__(self, wav_16k: np.ndarray) -> np.ndarray:
        """(L,) float waveform at 16 kHz -> (L * frames_per_video_frame // 640, dim) float32."""
        ...


class LogMelExtractor:
    """Log-mel as ``preprocess`` writes mel.npy (see ``daetalker.features.log_mel`` for the conventions)."""

    name = "log_mel"

    def __init__(
        self,
        *,
        sample_rate: int = LOG_MEL.sample_rate,
        n_mels: int = LOG_MEL.n_mels,
        win_ms: float = LOG_MEL.win_ms,
        hop_ms: float = LOG_MEL.hop_ms,
        n_fft: int = LOG_MEL.n_fft,
        fmin: float = LOG_MEL.fmin,
        fmax: float = LOG_MEL.fmax,
    ) -> None:
        hop = sample_rate * hop_ms / 1000
        per_video = SAMPLES_PER_VIDEO_FRAME / hop
        assert per_video == int(per_video), f"hop_ms={hop_ms} must split a 25 fps frame into whole hops"
        self.frames_per_video_frame = int(per_video)
        self.dim = n_mels
        self.params = dict(
            sample_rate=sample_rate, n_mels=n_mels, win_ms=win_ms, hop_ms=hop_ms, n_fft=n_fft, fmin=fmin, fmax=fmax
        )

    @classmethod
    def from_config(cls, cfg: PreprocessConfig) -> "LogMelExtractor":
        return cls(
            sample_rate=cfg.sample_rate,
            n_mels=cfg.n_mels,
            win_ms=cfg.win_ms,
            hop_ms=cfg.hop_ms,
            n_fft=cfg.n_fft,
            fmin=cfg.fmin,
            fmax=cfg.fmax,
        )

    def __call__(self, wav_16k: np.ndarray) -> np.ndarray:
        return log_mel(wav_16k, **self.params)


class PretrainedSpeechEncoder:
    """A frozen wav2vec 2.0 / HuBERT exported to TorchScript, loaded from a local file.

    The file is never downloaded: export it where the weights are available, e.g.
    ``torch.jit.trace(Wav2Vec2Model.from_pretrained(name, torchscript=True).eval(), torch.zeros(1, 16000))``
    then ``.save(path)``. The module takes a (1, L) waveform and returns (1, N, D) hidden
    states (or a tuple whose first item is that). Its frames are linearly resampled to
    exactly ``frames_per_video_frame`` per video frame (50 Hz models give N ~ 2 L / 640 already).
    """

    name = "pretrained"

    def __init__(
        self,
        path: str | Path,
        *,
        frames_per_video_frame: int = 2,
        normalize: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        self.path = Path(path)
        fix = (
            "export a wav2vec 2.0 / HuBERT encoder to TorchScript on a machine that has its weights, copy it "
            "here and set s2l.encoder_path to it, or set s2l.features=log_mel"
        )
        if not str(path) or not self.path.is_file():
            raise AssetError(f"{self.path}: pretrained speech encoder file not found (fix: {fix})")
        try:
            self.module = torch.jit.load(str(self.path), map_location=device).eval()
        except (RuntimeError, ValueError) as e:
            raise AssetError(
                f"{self.path}: not a TorchScript module ({str(e).splitlines()[0]}); state dicts need the "
                f"model code, which is not bundled (fix: {fix})"
            ) from e
        self.device = torch.device(device)
        self.frames_per_video_frame = frames_per_video_frame
        self.normalize = normalize  # zero-mean unit-variance input, as wav2vec 2.0's feature extractor does
        self.dim = int(self._encode(np.zeros(SAMPLE_RATE, np.float32)).shape[-1])

    @torch.inference_mode()
    def _encode(self, wav: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(wav, dtype=np.float32), device=self.device)[None]  # (1, L)
        if self.normalize:
            x = (x - x.mean()) / (x.std() + 1e-7)
        out = self.module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            out = out["last_hidden_state"]
        assert out.ndim == 3 and out.shape[0] == 1, f"{self.path}: expected (1, N, D) output, got {tuple(out.shape)}"
        return out[0].float()  # (N, D)

    def __call__(self, wav_16k: np.ndarray) -> np.ndarray:
        wav = np.asarray(wav_16k)
        assert wav.ndim == 1, f"expected a mono waveform (L,), got {wav.shape}"
        n = wav.shape[0] * self.frames_per_video_frame // SAMPLES_PER_VIDEO_FRAME
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        h = self._encode(wav)  # (N', D)
        h = F.interpolate(h.T[None], size=n, mode="linear", align_corners=False)[0].T  # (n, D)
        return h.cpu().numpy().astype(np.float32)


def write_features(extractor: SpeechFeatureExtractor, wav_path: Path, out_path: Path) -> int:
    """``extractor``'s features of a 16 kHz mono wav file into ``out_path`` (.npy, renamed into place); rows."""
    if hasattr(extractor, "write"):  # streams long audio in bounded memory
        return int(extractor.write(Path(wav_path), Path(out_path)))
    import soundfile as sf

    wav, rate = sf.read(str(wav_path), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE or wav.shape[1] != 1:
        raise ValueError(f"{wav_path}: {rate} Hz x {wav.shape[1]} channels; need 16 kHz mono")
    rows = extractor(wav[:, 0])
    part = Path(out_path).with_name(Path(out_path).name + ".part")
    with open(part, "wb") as f:
        np.save(f, np.ascontiguousarray(rows, np.float32))
    os.replace(part, out_path)
    return len(rows)


# Extractors whose weights are a pinned asset (daetalker.assets): bundles record the asset's sha256.
ASSET_OF = {"whisper-tiny": "whisper_tiny_en_ct2.bin"}


def features_record(name: str) -> dict[str, str]:
    """What a bundle's manifest records about the features its s2l needs."""
    record = {"speech_features": name}
    if name in ASSET_OF:
        record["speech_features_asset"] = ASSET_OF[name]
        record["speech_features_sha256"] = ASSETS[ASSET_OF[name]].sha256
    return record


def check_features_record(meta: dict[str, str], s2l: S2LConfig, where: Path) -> None:
    """Refuse a bundle whose recorded features differ from its config's or from this install's pinned weights."""
    name = meta.get("speech_features", "log_mel")  # bundles before the record are log-mel ones
    if name != s2l.features:
        raise ConfigError(f"{where}: the manifest records speech features {name!r}, its config s2l.features="
                          f"{s2l.features!r} (fix: re-bundle from the training run)")  # fmt: skip
    recorded = meta.get("speech_features_sha256")
    if name in ASSET_OF and recorded and recorded != ASSETS[ASSET_OF[name]].sha256:
        raise AssetError(f"{where}: its s2l was trained on {ASSET_OF[name]} sha256 {recorded[:12]}..., this "
                         f"install pins {ASSETS[ASSET_OF[name]].sha256[:12]}... (fix: generate with the daetalker "
                         "version that trained it, or retrain speech2latent)")  # fmt: skip
    if name in ASSET_OF:
        asset_path(ASSET_OF[name])  # missing or altered: says how to fetch it


def _whisper(s2l: S2LConfig, pre: PreprocessConfig) -> SpeechFeatureExtractor:
    from daetalker.features.whisper import WhisperFeatures

    return WhisperFeatures()


_REGISTRY: dict[str, Callable[[S2LConfig, PreprocessConfig], SpeechFeatureExtractor]] = {
    "log_mel": lambda s2l, pre: LogMelExtractor.from_config(pre),
    "pretrained": lambda s2l, pre: PretrainedSpeechEncoder(
        s2l.encoder_path, frames_per_video_frame=s2l.encoder_frames_per_video_frame
    ),
    "whisper-tiny": _whisper,
}


def register_extractor(name: str, factory: Callable[[S2LConfig, PreprocessConfig], SpeechFeatureExtractor]) -> None:
    _REGISTRY[name] = factory


def make_extractor(s2l: S2LConfig, preprocess: PreprocessConfig) -> SpeechFeatureExtractor:
    """The extractor ``s2l.features`` names, built from the stage configs."""
    if s2l.features not in _REGISTRY:
        raise ConfigError(f"s2l.features: unknown extractor {s2l.features!r} (choose one of {', '.join(_REGISTRY)})")
    return _REGISTRY[s2l.features](s2l, preprocess)
