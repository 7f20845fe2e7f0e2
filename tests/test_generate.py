"""Generation: audio -> mp4 with a tiny random bundle; shared x_T, batched decoding, chunking, bad inputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from daetalker.diffusion import linear_schedule
from daetalker.errors import DaetalkerError, InputMediaError, IntegrityError
from daetalker.generate import video as video_mod
from daetalker.generate.audio_io import prepare_audio
from daetalker.generate.model import load_talker
from daetalker.generate.pose import resolve_pose
from daetalker.bundle.build import make_test_bundle
from daetalker.generate.video import (decode_latents, generate_video, predict_latents, reference_noise, render_video,
                                      shared_noise)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # micro models: threads only cost

SR = 16000



@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("b") / "bundle")


@pytest.fixture(scope="module")
def talker(bundle):
    return load_talker(bundle, torch.device("cpu"))


def speech_like(seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # syllable-rate amplitude
    return (0.3 * env * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 0.5 * t)) * t)).astype(np.float32)


def probe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_type,codec_name,pix_fmt,nb_read_frames,r_frame_rate,width,height", "-of", "json", str(path)],
                         capture_output=True, check=True, text=True).stdout  # fmt: skip
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


def test_two_seconds_of_mp3_give_50_frames_h264_aac(bundle, tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, np.stack([speech_like(2.0, 44100)] * 2, 1), 44100)  # stereo 44.1 kHz: resampled + downmixed
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-y", str(tmp_path / "a.mp3")], check=True)
    r = generate_video(bundle, tmp_path / "a.mp3", tmp_path / "out" / "o.mp4", steps=2, batch_size=16, progress=False)
    assert r.path == tmp_path / "out" / "o.mp4" and r.fps_decode > 0
    assert abs(r.n_frames - 50) <= 1
    s = probe(r.path)
    assert s["video"]["codec_name"] == "h264" and s["video"]["pix_fmt"] == "yuv420p"
    assert s["video"]["r_frame_rate"] == "25/1" and abs(int(s["video"]["nb_read_frames"]) - 50) <= 1
    assert (s["video"]["width"], s["video"]["height"]) == (256, 256)  # the 16 px DAE's frames upscaled
    assert s["audio"]["codec_name"] == "aac"
    assert [p.name for p in r.path.parent.iterdir()] == ["o.mp4"]  # no temp file left behind


def test_shared_noise_identical_latents_give_identical_frames(talker) -> None:
    dcfg = talker.dae_cfg
    sched = linear_schedule(dcfg.timesteps, dcfg.beta_start, dcfg.beta_end)
    z = torch.randn(1, dcfg.latent_dim).expand(4, -1)
    x_T = shared_noise(dcfg.image_size, 0)
    same = torch.cat(list(decode_latents(talker.dae, z, x_T, steps=3, schedule=sched, batch_size=4)))
    assert torch.equal(shared_noise(dcfg.image_size, 0), x_T) and not torch.equal(shared_noise(dcfg.image_size, 1), x_T)
    for i in range(1, 4):
        assert torch.allclose(same[i], same[0], atol=1e-5)
    per_frame = torch.randn(4, *x_T.shape[1:], generator=torch.Generator().manual_seed(1))
    diff = torch.cat(list(decode_latents(talker.dae, z, per_frame, steps=3, schedule=sched, batch_size=4)))
    flicker_shared = (same[1:] - same[:-1]).abs().mean()
    flicker_per_frame = (diff[1:] - diff[:-1]).abs().mean()
    assert flicker_shared < 1e-5 < 0.05 < flicker_per_frame


def test_reference_noise_is_the_reference_frames_subcode(talker, bundle, tmp_path: Path) -> None:
    """x_T inverted from the reference frame decodes, with the frame's own z, back to the frame; a
    video with --noise reference differs from --noise random and is the same whatever the seed."""
    dcfg = talker.dae_cfg
    sched = linear_schedule(dcfg.timesteps, dcfg.beta_start, dcfg.beta_end)
    assert talker.reference_frame is not None and talker.reference_frame.dtype == np.uint8
    x_T = reference_noise(talker.dae, talker.reference_frame, steps=50, schedule=sched)
    assert x_T.shape == (1, 3, dcfg.image_size, dcfg.image_size)
    x0 = video_mod.to_model_range(talker.reference_frame[None], dcfg.image_size)
    with torch.no_grad():
        z = talker.dae.encode(x0)
    back = next(decode_latents(talker.dae, z, x_T, steps=50, schedule=sched, batch_size=1, clip_x0=False))
    assert (back - x0).abs().mean() < 0.05 < (shared_noise(dcfg.image_size, 0) - x_T).abs().mean()

    sf.write(tmp_path / "a.wav", speech_like(0.4), SR)
    frames = {}
    for name, kw in {"ref0": {"seed": 0}, "ref1": {"seed": 1}, "rand": {"noise": "random"}}.items():
        r = generate_video(bundle, tmp_path / "a.wav", tmp_path / f"{name}.mp4", steps=2, progress=False, **kw)
        frames[name] = subprocess.run(["ffmpeg", "-v", "error", "-i", str(r.path), "-f", "rawvideo", "-"],
                                      capture_output=True, check=True).stdout  # fmt: skip
    assert frames["ref0"] == frames["ref1"] != frames["rand"]
    # an already loaded talker renders the same video as generate_video loading the bundle itself
    r = render_video(talker, tmp_path / "a.wav", tmp_path / "loaded.mp4", steps=2, progress=False)
    assert subprocess.run(["ffmpeg", "-v", "error", "-i", str(r.path), "-f", "rawvideo", "-"],
                          capture_output=True, check=True).stdout == frames["ref0"]  # fmt: skip
    with pytest.raises(DaetalkerError, match="--noise"):
        generate_video(bundle, tmp_path / "a.wav", tmp_path / "x.mp4", noise="inverted", progress=False)


def test_reference_guidance_keeps_the_reference_frame_and_scales_a_departure_from_it(talker, bundle,
                                                                                      tmp_path: Path) -> None:
    dcfg = talker.dae_cfg
    sched = linear_schedule(dcfg.timesteps, dcfg.beta_start, dcfg.beta_end)
    x0, z_ref = video_mod.reference_latent(talker.dae, talker.reference_frame)
    x_T = reference_noise(talker.dae, talker.reference_frame, steps=20, schedule=sched)
    delta = 0.01 * torch.randn(1, dcfg.latent_dim, generator=torch.Generator().manual_seed(4))
    z = torch.cat([z_ref, z_ref + delta])  # (2, D): the reference, and a small move away from it

    def decode(scale: float) -> torch.Tensor:
        return next(decode_latents(talker.dae, z, x_T, steps=20, schedule=sched, batch_size=2, clip_x0=False,
                                   guide=(z_ref, scale)))  # fmt: skip

    plain, none, double = decode(1.0), decode(0.0), decode(2.0)
    assert torch.allclose(double[0], plain[0], atol=1e-5)  # z == z_ref: any scale decodes the reference
    assert torch.allclose(none[1], plain[0], atol=1e-5)  # scale 0: every z decodes as the reference
    gain = (double[1] - plain[0]).abs().mean() / (plain[1] - plain[0]).abs().mean()
    assert 1.6 < gain < 2.4, gain  # to first order in delta, twice the plain departure

    sf.write(tmp_path / "a.wav", speech_like(0.4), SR)
    raw = lambda p: subprocess.run(["ffmpeg", "-v", "error", "-i", str(p), "-f", "rawvideo", "-"],  # noqa: E731
                                   capture_output=True, check=True).stdout  # fmt: skip
    assert dcfg.guidance == 1.0
    one = generate_video(bundle, tmp_path / "a.wav", tmp_path / "g1.mp4", steps=2, guidance=1.0, progress=False)
    dflt = generate_video(bundle, tmp_path / "a.wav", tmp_path / "gd.mp4", steps=2, progress=False)
    three = generate_video(bundle, tmp_path / "a.wav", tmp_path / "g3.mp4", steps=2, guidance=3.0, progress=False)
    assert raw(one.path) == raw(dflt.path) != raw(three.path)
    with pytest.raises(DaetalkerError, match="--guidance"):
        generate_video(bundle, tmp_path / "a.wav", tmp_path / "x.mp4", guidance=11.0, progress=False)


def _renderer(tmp_path: Path, **fixed):
    """render(talker, name, **options) -> the raw frames of a 0.4 s clip rendered with 2 DDIM steps."""
    sf.write(tmp_path / "a.wav", speech_like(0.4), SR)

    def render(talker, name: str, **kw) -> bytes:
        path = render_video(talker, tmp_path / "a.wav", tmp_path / name, steps=2, progress=False, **fixed, **kw).path
        return subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-"],
                              capture_output=True, check=True).stdout  # fmt: skip

    return render


def _fitted_copy(talker, attributes: int):
    """A copy of ``talker`` (own s2l and config) and the (W, b, G) of latents that carry ``attributes`` linearly."""
    import copy

    from daetalker.models.pose_steering import PoseLatentMoments

    fitted = copy.copy(talker)
    fitted.s2l, fitted.config = copy.deepcopy(talker.s2l), copy.deepcopy(talker.config)
    d = fitted.s2l.latent_dim
    gen = torch.Generator().manual_seed(0)
    labels = torch.randn(2000, attributes, generator=gen)
    moments = PoseLatentMoments(d, attributes)
    moments.add(torch.randn(2000, d, generator=gen) + labels @ torch.randn(attributes, d, generator=gen), labels)
    return fitted, moments.fit()


def test_pose_steering_follows_the_bundles_default_and_the_option(talker, tmp_path: Path) -> None:
    """render_video steers the latents to the pose it is given when s2l.steer_pose (default on) and a fitted
    steering say so; --no-steer-pose and bundles from before steering was fitted leave them as made."""
    render = _renderer(tmp_path, pose="constant:10,0,0")
    assert talker.config.s2l.steer_pose and not talker.s2l.steering_fitted
    assert render(talker, "u1.mp4", steer_pose=True) == render(talker, "u0.mp4", steer_pose=False)

    fitted, (w, b, g) = _fitted_copy(talker, 3)
    fitted.s2l.set_pose_steering(w, b, g)
    steered = render(fitted, "f.mp4")
    assert steered == render(fitted, "f1.mp4", steer_pose=True) != render(fitted, "f0.mp4", steer_pose=False)
    assert render(fitted, "f0b.mp4", steer_pose=False) == render(talker, "u2.mp4")


def test_mouth_gain_follows_the_bundles_setting_and_the_option(talker, tmp_path: Path) -> None:
    """render_video scales the mouth's movement in the latents by s2l.mouth_gain (default 1) or --mouth-gain
    where the mouth direction was fitted; bundles from before it render as made, and a bad gain is refused."""
    from daetalker.generate.video import mouth_gain_of

    render = _renderer(tmp_path)
    assert talker.config.s2l.mouth_gain == 1.0 and not talker.s2l.mouth_steering_fitted
    plain = render(talker, "u.mp4")
    assert render(talker, "u3.mp4", mouth_gain=3.0) == plain and mouth_gain_of(talker, 3.0) == 1.0

    fitted, (w, b, g) = _fitted_copy(talker, 1)
    fitted.s2l.set_mouth_steering(w[0], b[0], g[:, 0])
    assert render(fitted, "f.mp4") == plain  # the default gain, 1, leaves the latents as made
    louder = render(fitted, "f3.mp4", mouth_gain=3.0)
    assert louder != plain
    fitted.config.s2l.mouth_gain = 3.0  # a speaker's setting, carried in the bundle's config
    assert render(fitted, "c3.mp4") == louder and render(fitted, "c1.mp4", mouth_gain=1.0) == plain
    with pytest.raises(DaetalkerError, match="--mouth-gain"):
        render_video(fitted, tmp_path / "a.wav", tmp_path / "bad.mp4", mouth_gain=11.0, progress=False)


def test_batched_decoding_equals_one_frame_at_a_time(talker) -> None:
    dcfg = talker.dae_cfg
    sched = linear_schedule(dcfg.timesteps, dcfg.beta_start, dcfg.beta_end)
    z = torch.randn(7, dcfg.latent_dim, generator=torch.Generator().manual_seed(3))
    x_T = shared_noise(dcfg.image_size, 5)
    batched = list(decode_latents(talker.dae, z, x_T, steps=3, schedule=sched, batch_size=4))
    assert [len(b) for b in batched] == [4, 3]
    single = torch.cat(list(decode_latents(talker.dae, z, x_T, steps=3, schedule=sched, batch_size=1)))
    assert torch.allclose(torch.cat(batched), single, atol=1e-4)
    assert (single[0] - single[1]).abs().mean() > 1e-3  # different latents do change the frame


def test_chunked_latents_match_whole_file_and_stay_bounded(talker, tmp_path: Path) -> None:
    sf.write(tmp_path / "long.wav", speech_like(30.0), SR)
    prepared = prepare_audio(tmp_path / "long.wav", tmp_path / "work", talker.config.preprocess)
    assert prepared.n_frames == 750 and prepared.mel().shape == (3000, 80)
    whole = torch.cat([z for _, z in predict_latents(talker.s2l, prepared.mel(), 750, None,
                                                     chunk_frames=10**6, context_frames=0)])  # fmt: skip
    seen: list[int] = []
    forward = talker.s2l.forward
    talker.s2l.forward = lambda f, **kw: (seen.append(f.shape[1]), forward(f, **kw))[1]
    try:
        parts = list(predict_latents(talker.s2l, prepared.mel(), 750, None, chunk_frames=125, context_frames=50))
    finally:
        del talker.s2l.forward
    assert [a for a, _ in parts] == list(range(0, 750, 125))
    chunked = torch.cat([z for _, z in parts])
    assert chunked.shape == whole.shape == (750, talker.dae_cfg.latent_dim)
    # bounded: no pass sees more than chunk + 2 x context frames of features, however long the audio
    assert max(seen) == 4 * (125 + 2 * 50)
    # random weights attend almost uniformly over everything, the hardest case for chunking
    assert (chunked - whole).abs().max() < 0.15 and (chunked - whole).abs().mean() < 0.03 * whole.abs().mean() + 0.01


def test_pose_sources(tmp_path: Path) -> None:
    assert resolve_pose("predicted", 5) is None
    np.testing.assert_array_equal(resolve_pose("constant:10,-2,3.5", 4), [[10, -2, 3.5]] * 4)
    clip = tmp_path / "clip"
    clip.mkdir()
    pd.DataFrame({"yaw": [0.0, np.nan, 2.0, 3.0], "pitch": [1.0] * 4, "roll": [0.0] * 4,
                  "face_found": [True, False, True, True]}).to_parquet(clip / "labels.parquet")  # fmt: skip
    ref = resolve_pose(f"reference:{clip}", 9)
    np.testing.assert_allclose(ref[:, 0], [0, 1, 2, 3, 2, 1, 0, 1, 2])  # interpolated, played back and forth
    good = tmp_path / "p.csv"
    pd.DataFrame({"yaw": np.arange(5.0), "pitch": 0.0, "roll": 0.0}).to_csv(good, index=False)
    assert resolve_pose(str(good), 5).shape == (5, 3)
    with pytest.raises(InputMediaError, match=r"p\.csv: pose_length: 5 rows for 6 frames"):
        resolve_pose(str(good), 6)
    bad = tmp_path / "nan.csv"
    pd.DataFrame({"yaw": [0.0, np.nan], "pitch": 0.0, "roll": 0.0}).to_csv(bad, index=False)
    with pytest.raises(InputMediaError, match=r"nan\.csv: pose_not_finite.*row 1"):
        resolve_pose(str(bad), 2)
    for spec in ("constant:1,2", "wobble"):
        with pytest.raises(DaetalkerError, match="--pose"):
            resolve_pose(spec, 3)


def test_constant_pose_and_silent_audio(bundle, talker, tmp_path: Path) -> None:
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    r = generate_video(bundle, tmp_path / "silent.wav", tmp_path / "s.mp4", pose="constant:0,0,0", steps=1,
                       video_size=48, progress=False)  # fmt: skip
    v = probe(r.path)["video"]
    assert r.n_frames == 25 and v["codec_name"] == "h264" and (v["width"], v["height"]) == (48, 48)
    # the constant pose reaches the projector: it changes s2l's latents relative to the predicted pose
    mel = prepare_audio(tmp_path / "silent.wav", tmp_path / "w", talker.config.preprocess).mel()
    assert np.all(mel == np.float32(np.log(1e-5)))  # silence = the log floor, as preprocess writes it
    pred = next(predict_latents(talker.s2l, mel, 25, None, chunk_frames=25, context_frames=0))[1]
    const = next(predict_latents(talker.s2l, mel, 25, resolve_pose("constant:20,0,0", 25), chunk_frames=25,
                                 context_frames=0))[1]  # fmt: skip
    assert (pred - const).abs().max() > 1e-3


def test_bad_inputs_raise_clear_errors(bundle, tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"ID3" + bytes(range(256)) * 20)
    out = tmp_path / "o.mp4"
    for path, reason in ((empty, "empty"), (corrupt, "audio_decode_error"), (tmp_path / "none.wav", "not_found")):
        with pytest.raises(InputMediaError, match=rf"{path.name}: {reason}"):
            generate_video(bundle, path, out, steps=1, progress=False)
    sf.write(tmp_path / "tiny.wav", np.zeros(300, np.float32), SR)  # < one 40 ms frame
    with pytest.raises(InputMediaError, match="tiny.wav: too_short"):
        generate_video(bundle, tmp_path / "tiny.wav", out, steps=1, progress=False)
    sf.write(tmp_path / "a.wav", speech_like(1.0), SR)
    with pytest.raises(DaetalkerError, match="--size 33"):
        generate_video(bundle, tmp_path / "a.wav", out, video_size=33, progress=False)
    with pytest.raises(DaetalkerError, match="--crf 52"):
        generate_video(bundle, tmp_path / "a.wav", out, crf=52, progress=False)
    with pytest.raises(DaetalkerError, match="no such bundle folder"):
        generate_video(tmp_path / "nope", tmp_path / "a.wav", out, progress=False)
    with pytest.raises(IntegrityError):
        generate_video(tmp_path, tmp_path / "a.wav", out, progress=False)  # a folder that is not a bundle
    # generation reads bundle folders only: a registered model is fetched first (local_bundle), and that
    # error names the URI and the store it read
    with pytest.raises(DaetalkerError, match="models:/talker-nobody@champion: a registered model must be fetched"):
        generate_video("models:/talker-nobody@champion", tmp_path / "a.wav", out, progress=False)
    from daetalker.registry.log_model import local_bundle

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    with pytest.raises(DaetalkerError, match="models:/talker-nobody@champion: cannot fetch it from the MLflow registry"):
        with local_bundle("models:/talker-nobody@champion"):
            pass
    with local_bundle(bundle) as folder:
        assert folder == bundle
    assert not out.exists()


def test_failure_midway_leaves_no_partial_mp4(bundle, tmp_path: Path, monkeypatch) -> None:
    sf.write(tmp_path / "a.wav", speech_like(2.0), SR)
    out = tmp_path / "o.mp4"
    out.write_bytes(b"previous video")
    real = video_mod.decode_latents

    def boom(*args, **kwargs):
        it = real(*args, **kwargs)
        yield next(it)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(video_mod, "decode_latents", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        generate_video(bundle, tmp_path / "a.wav", out, steps=1, batch_size=8, progress=False)
    assert out.read_bytes() == b"previous video"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "o.mp4"]
