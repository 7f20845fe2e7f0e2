"""Speech features for speech2latent (log-mel by default; Whisper tiny.en's encoder or a local pretrained one)."""

from daetalker.features.extractor import (
    LogMelExtractor,
    PretrainedSpeechEncoder,
    check_features_record,
    features_record,
    SpeechFeatureExtractor,
    make_extractor,
    register_extractor,
    write_features,
)
from daetalker.features.log_mel import log_mel, mel_filterbank

__all__ = [
    "LogMelExtractor",
    "PretrainedSpeechEncoder",
    "check_features_record",
    "features_record",
    "SpeechFeatureExtractor",
    "log_mel",
    "make_extractor",
    "mel_filterbank",
    "register_extractor",
    "write_features",
]
