"""Whisper tiny.en features: the CTranslate2 container reader, the plain-torch encoder against ctranslate2's
own, and the 25 fps alignment (two encoder frames per video frame, also across 30 s windows)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from daetalker.assets import asset_path
from daetalker.errors import AssetError
from daetalker.features import make_extractor, write_features
from daetalker.features.whisper import WHISPER_ASSET, WhisperFeatures, plan_spans, whisper_log_mel
from daetalker.models.ctranslate2_file import parse_ct2, read_ct2
from daetalker.models.whisper_encoder import load_whisper_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def ct2_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str] = {}, *, version: int = 6,
              spec: str = "WhisperSpec", bf16: tuple[str, ...] = ()) -> bytes:
    """A model.bin as CTranslate2's ``_serialize`` writes it (written here independently of the reader)."""
    out = struct.pack("<I", version) + _string(spec) + struct.pack("<II", 3, len(variables))
    for name, value in sorted(variables.items()):
        type_id = 5 if name in bf16 else TYPE_IDS[value.dtype.name]
        data = value.astype(value.dtype.newbyteorder("<")).tobytes()
        out += _string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        out += struct.pack("<BI", type_id, len(data)) + data
    out += struct.pack("<I", len(aliases))
    for alias, target in sorted(aliases.items()):
        out += _string(alias) + _string(target)
    return out


def tiny_whisper(d: int = 16, heads: int = 2, layers: int = 2, n_ctx: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Random fp16 variables of a small Whisper encoder under CTranslate2's names (+ one decoder array)."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: (rng.normal(size=shape) / np.sqrt(shape[-1])).astype(np.float16)  # noqa: E731
    v = {"encoder/conv1/weight": w(d, 80, 3), "encoder/conv1/bias": w(d), "encoder/conv2/weight": w(d, d, 3),
         "encoder/conv2/bias": w(d), "encoder/layer_norm/gamma": (1 + w(d)).astype(np.float16),
         "encoder/layer_norm/beta": w(d), "encoder/num_heads": np.array(heads, np.int16),
         "encoder/position_encodings/encodings": w(n_ctx, d), "decoder/embeddings/weight": w(30, d)}  # fmt: skip
    for i in range(layers):
        p = f"encoder/layer_{i}"
        v.update({f"{p}/self_attention/layer_norm/gamma": np.ones(d, np.float16),
                  f"{p}/self_attention/layer_norm/beta": w(d), f"{p}/self_attention/linear_0/weight": w(3 * d, d),
                  f"{p}/self_attention/linear_0/bias": w(3 * d), f"{p}/self_attention/linear_1/weight": w(d, d),
                  f"{p}/self_attention/linear_1/bias": w(d), f"{p}/ffn/layer_norm/gamma": np.ones(d, np.float16),
                  f"{p}/ffn/layer_norm/beta": w(d), f"{p}/ffn/linear_0/weight": w(4 * d, d),
                  f"{p}/ffn/linear_0/bias": w(4 * d), f"{p}/ffn/linear_1/weight": w(d, 4 * d),
                  f"{p}/ffn/linear_1/bias": w(d)})  # fmt: skip
    return v


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ct2") / "model.bin"
    path.write_bytes(ct2_bytes(tiny_whisper(), {"decoder/projection/weight": "decoder/embeddings/weight"}))
    return path


# ------------------------------------------------------------------ the container
def test_reader_returns_every_array_dtype_and_alias() -> None:
    bf = np.array([1.0, -2.5, 3.140625], np.float32)  # exactly representable in bfloat16
    variables = {"a/w": np.arange(6, dtype=np.float16).reshape(2, 3) / 4, "a/i": np.array(7, np.int16),
                 "b/f": np.linspace(0, 1, 5, dtype=np.float32), "b/q": np.array([-3, 4], np.int8),
                 "c/bf": (bf.view(np.uint32) >> 16).astype(np.uint16)}  # fmt: skip
    model = parse_ct2(ct2_bytes(variables, {"z/alias": "a/w"}, bf16=("c/bf",)))
    assert (model.binary_version, model.spec, model.revision) == (6, "WhisperSpec", 3)
    for name in ("a/w", "a/i", "b/f", "b/q"):
        assert model.get(name).dtype == variables[name].dtype and np.array_equal(model.get(name), variables[name])
    assert np.array_equal(model.get("c/bf"), bf) and model.get("c/bf").dtype == np.float32
    assert np.array_equal(model.get("z/alias"), variables["a/w"]) and "z/alias" in model
    assert set(model.scope("a")) == {"w", "i"}


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[:-7], "truncated"),
    (lambda b: struct.pack("<I", 9) + b[4:], "binary version 9"),
    (lambda b: b + b"\0\0", "bytes after the aliases"),
])  # fmt: skip
def test_reader_refuses_damaged_files(tmp_path: Path, damage, match: str) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(damage(ct2_bytes({"x": np.ones((4, 4), np.float16)})))
    with pytest.raises(AssetError, match=match) as err:
        read_ct2(path)
    assert str(path) in str(err.value)


def test_reader_refuses_alias_to_nothing_and_other_specs(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="aliases"):
        parse_ct2(ct2_bytes({"x": np.ones(2, np.float32)}, {"y": "nope"}))
    path = tmp_path / "model.bin"
    path.write_bytes(ct2_bytes({"x": np.ones(2, np.float32)}, spec="TransformerSpec"))
    with pytest.raises(AssetError, match="not a Whisper one"):
        load_whisper_encoder(path)


def test_pinned_asset_reads_as_whisper_tiny() -> None:
    model = read_ct2(asset_path(WHISPER_ASSET))
    params = sum(int(np.prod(a.shape)) for a in model.variables.values())
    assert model.spec == "WhisperSpec" and abs(params - 37.76e6) < 0.01e6
    enc = load_whisper_encoder(asset_path(WHISPER_ASSET))
    size = enc.size
    assert (size.d_model, size.heads, size.layers, size.n_ctx, size.n_mels) == (384, 6, 4, 1500, 80)
    assert abs(sum(p.numel() for p in enc.state_dict().values()) - 8.21e6) < 0.01e6


# ------------------------------------------------------------------ alignment
def test_plan_spans_tile_and_respect_the_window() -> None:
    for n, max_frames, ctx in [(0, 40, 9), (40, 40, 9), (41, 40, 9), (500, 40, 9), (3001, 1500, 250)]:
        spans = plan_spans(n, max_frames, ctx)
        kept = [i for s in spans for i in range(s.keep_start, s.keep_stop)]
        assert kept == list(range(n))
        for s in spans:
            assert s.stop - s.start <= max_frames and s.start <= s.keep_start < s.keep_stop <= s.stop
            # a kept frame has ``ctx`` frames of real audio on each side, or the signal's edge
            assert s.keep_start - s.start >= ctx or s.start == 0
            assert s.stop - s.keep_stop >= ctx or s.stop == n


@pytest.mark.parametrize("n_samples", [0, 319, 320, 640, 640 * 37 + 100, 640 * 100])
def test_two_rows_per_video_frame_across_windows(tiny_model_file: Path, tmp_path: Path, n_samples: int) -> None:
    """L samples -> L // 320 rows (2 per 25 fps frame), also when the audio spans several 40-frame windows;
    the file writer streams the same rows."""
    ext = WhisperFeatures(tiny_model_file, context_frames=8)
    wav = np.random.default_rng(n_samples).normal(0, 0.1, n_samples).astype(np.float32)
    rows = ext(wav)
    assert rows.shape == (n_samples // 320, 16) and rows.dtype == np.float32
    if n_samples == 640 * 100:  # 200 frames = 7 windows
        import soundfile as sf

        sf.write(tmp_path / "a.wav", wav, 16000, subtype="FLOAT")
        assert write_features(ext, tmp_path / "a.wav", tmp_path / "a.npy") == 200
        assert np.allclose(np.load(tmp_path / "a.npy"), rows, atol=1e-5)
        # each window's kept rows are its own encoding of the audio advanced by 10 ms, at the right offset
        advanced = np.concatenate([wav[160:], np.zeros(160, np.float32)])
        spans = plan_spans(200, 40, 8)
        assert len(spans) == 9
        for sp in spans:
            own = ext.encode_window(advanced[320 * sp.start : 320 * sp.stop])  # (stop - start, 16)
            kept = own[sp.keep_start - sp.start : sp.keep_stop - sp.start]
            assert np.allclose(rows[sp.keep_start : sp.keep_stop], kept, atol=1e-5)


def test_encoder_frame_i_is_centred_on_its_20_ms(tiny_model_file: Path) -> None:
    """A click at sample 320 i + 160 (the middle of encoder frame i's 20 ms) peaks in the log-mel frame 2 i of
    the samples the encoder is fed, the centre of conv2's output i (kernel 3, stride 2): so video frame v's
    audio is rows 2 v and 2 v + 1, as log-mel's rows 4 v .. 4 v + 3 are centred on their hops."""
    ext = WhisperFeatures(tiny_model_file)
    for i in (0, 7, 31, 32):
        wav = np.random.default_rng(i).normal(0, 1e-3, 640 * 20).astype(np.float32)
        wav[320 * i + 160 - 5 : 320 * i + 160 + 5] += 0.5
        fed = []

        def read(start: int, count: int) -> np.ndarray:
            out = np.zeros(count, np.float32)
            got = wav[start : start + count]
            out[: len(got)] = got
            fed.append(out)
            return out

        assert sum(len(r) for r in ext.iter_rows(read, len(wav))) == 40
        mel = whisper_log_mel(torch.from_numpy(fed[0]))  # (80, 80)
        assert int(mel.sum(0).argmax()) == 2 * i


# ------------------------------------------------------------------ against ctranslate2
def speech_16k(text: str = "Bin blue at f two now, then place green by the river soon.") -> np.ndarray:
    """espeak-ng speech (the synthetic speaker's voice) at 16 kHz, float32."""
    from scipy.signal import resample_poly

    from daetalker.synth.speech import synthesize

    utt = synthesize(text)
    assert utt.sample_rate == 22050
    return resample_poly(utt.samples / 32768.0, 320, 441).astype(np.float32)


def test_encoder_agrees_with_ctranslate2(tmp_path: Path) -> None:
    """The same log-mel through this encoder and through ctranslate2's (fp16 weights computed in float32)
    agree within fp16 rounding: |ours - theirs| <= 2^-10 (|theirs| + 1)."""
    import ctranslate2

    for name, dst in [(WHISPER_ASSET, "model.bin"), ("whisper_tiny_en_ct2_config.json", "config.json"),
                      ("whisper_tiny_en_ct2_vocabulary.txt", "vocabulary.txt")]:
        (tmp_path / dst).symlink_to(asset_path(name))
    mel = whisper_log_mel(torch.from_numpy(speech_16k()[: 3 * 16000]))[None]  # (1, 80, 300)
    theirs = ctranslate2.models.Whisper(str(tmp_path), device="cpu", compute_type="float32")
    ref = np.asarray(theirs.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()))))
    ours = WhisperFeatures().encoder(mel).numpy()
    assert ours.shape == ref.shape == (1, 150, 384)
    err = np.abs(ours - ref)
    assert (err <= 2.0**-10 * (np.abs(ref) + 1)).all(), float(err.max())
    assert float(np.abs(ref).mean()) > 0.1  # real activations, not an all-zero agreement


def test_make_extractor_names_whisper_tiny() -> None:
    from daetalker.config import load_config

    cfg = load_config("tiny", None, ["s2l.features=whisper-tiny"])
    ext = make_extractor(cfg.s2l, cfg.preprocess)
    assert (ext.name, ext.frames_per_video_frame, ext.dim) == ("whisper-tiny", 2, 384)
