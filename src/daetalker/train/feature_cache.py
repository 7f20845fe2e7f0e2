"""Speech features other than log-mel, computed once per clip from its audio.wav and kept beside the run.

``preprocess`` writes only log-mel (mel.npy). For ``s2l.features`` other than
``log_mel`` (``whisper-tiny``) the trainer writes ``OUT/features/<name>/<clip>.npy``
(float32 (k N, F), the layout of mel.npy) and ``<clip>.json`` naming the audio's
sha256 and the extractor's fingerprint (its weights' sha256): a resumed or
repeated run reuses a file only when both still match, so edited data or other
weights never meet stale features. The data folder is never written to.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from daetalker.data.dataset import DatasetError, read_header
from daetalker.features import SpeechFeatureExtractor, write_features
from daetalker.hashing import sha256_file
from daetalker.train.frames_dataset import read_manifest

log = logging.getLogger(__name__)


def fingerprint(extractor: SpeechFeatureExtractor) -> str:
    return str(getattr(extractor, "fingerprint", extractor.name))


def _fresh(npy: Path, meta: Path, key: dict[str, str]) -> bool:
    if not (npy.is_file() and meta.is_file()):
        return False
    try:
        return json.loads(meta.read_text()) == key
    except ValueError:
        return False


def cache_features(data_dir: Path, splits: tuple[str, ...], extractor: SpeechFeatureExtractor,
                   cache_dir: Path) -> Path:
    """Write (or reuse) the features of every clip of ``splits``; the folder that holds them."""
    data_dir, cache_dir = Path(data_dir), Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(data_dir)
    ids = [str(c) for c in manifest[manifest["split"].isin(splits)]["clip_id"]]
    t0, written, seconds = time.perf_counter(), 0, 0.0
    for cid in ids:
        wav = data_dir / "clips" / cid / "audio.wav"
        info = read_header(wav)  # missing or torn: names the file and the fix
        key = {"audio_sha256": sha256_file(wav), "extractor": fingerprint(extractor)}
        npy, meta = cache_dir / f"{cid}.npy", cache_dir / f"{cid}.json"
        if _fresh(npy, meta, key):
            continue
        meta.unlink(missing_ok=True)  # the key goes last: a crash in between leaves no stale pair
        try:
            write_features(extractor, wav, npy)
        except ValueError as e:
            raise DatasetError(f"{wav}: {e} (fix: re-run `daetalker preprocess`)") from e
        meta.write_text(json.dumps(key))
        written, seconds = written + 1, seconds + info.frames / info.samplerate
    if written:
        took = time.perf_counter() - t0
        log.info("%s features of %d clips (%.1f s of audio) in %.1f s (%.1fx real time) -> %s", extractor.name,
                 written, seconds, took, seconds / max(took, 1e-9), cache_dir)  # fmt: skip
    return cache_dir
