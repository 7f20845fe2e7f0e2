"""Speech features for speech2latent (log-mel by default; a local pretrained encoder optionally)."""

from daetalker.features.extractor import (
    LogMelExtractor,
    PretrainedSpeechEncoder,
    SpeechFeatureExtractor,
    make_extractor,
    register_extractor,
)
from daetalker.features.log_mel import log_mel, mel_filterbank

__all__ = [
    "LogMelExtractor",
    "PretrainedSpeechEncoder",
    "SpeechFeatureExtractor",
    "log_mel",
    "make_extractor",
    "mel_filterbank",
    "register_extractor",
]
