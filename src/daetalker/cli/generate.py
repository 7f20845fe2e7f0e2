"""``daetalker generate``: speech in, talking-face video out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from daetalker.cli.options import DeviceOpt

app = typer.Typer()


@app.command("generate")
def generate_cmd(
    audio: Annotated[Path, typer.Option("--audio", help="Speech: any audio (or video) file ffmpeg reads.")],
    model: Annotated[str, typer.Option("--model", help="Bundle folder or models:/NAME@ALIAS.")],
    out: Annotated[Path, typer.Option("--out", help="Output .mp4 (H.264 + AAC, 25 fps).")],
    pose: Annotated[str, typer.Option("--pose", help="predicted | predicted-motion | constant:Y,P,R | reference:CLIP_DIR | FILE.csv")] = "predicted",
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="DDIM steps; default dae.sample_steps.")] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", min=0.0, max=10.0, help="Reference guidance: "
                        "how many times as far from the reference frame z moves each step; 1 = plain DDIM; "
                        "default dae.guidance.")] = None,
    steer_pose: Annotated[Optional[bool], typer.Option("--steer-pose/--no-steer-pose", help="Move each latent so it "
                          "carries the pose asked for (default s2l.steer_pose; bundles from before it was fitted: "
                          "off).")] = None,
    mouth_gain: Annotated[Optional[float], typer.Option("--mouth-gain", min=0.0, max=10.0, help="Scale the mouth's "
                          "movement in each latent (1 = as predicted; default s2l.mouth_gain; bundles from before it "
                          "was fitted: 1).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the one shared x_T (--noise random).")] = 0,
    noise: Annotated[str, typer.Option("--noise", help="Shared x_T: reference (the bundle's reference frame, "
                                       "DDIM-inverted) or random.")] = "reference",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096, help="Frames decoded per DDIM batch.")] = 16,
    chunk_seconds: Annotated[float, typer.Option("--chunk-seconds", min=0.2, max=600.0, help="Audio per speech2latent pass.")] = 10.0,
    size: Annotated[Optional[int], typer.Option("--size", min=16, max=2048, help="Side of the written frames in px; default "
                                                "256 or the DAE's size if larger.")] = None,
    crf: Annotated[int, typer.Option("--crf", min=0, max=51, help="x264 quality, 0-51 (lower is better).")] = 10,
    device: DeviceOpt = None,
) -> None:
    """Render a talking-face video of AUDIO with a trained talker (one shared x_T, batched DDIM)."""
    from daetalker import outputs
    from daetalker.generate.video import generate_video
    from daetalker.registry.log_model import local_bundle

    outputs.require_file_target("--out", out, (".mp4",))
    outputs.refuse_inputs("--out", out, {"--audio": audio, "--model": model})

    with local_bundle(model) as bundle:  # models:/ URIs: fetched from the project's registry, verified
        r = generate_video(bundle, audio, out, pose=pose, steps=steps, guidance=guidance, steer_pose=steer_pose,
                           mouth_gain=mouth_gain, seed=seed, noise=noise, batch_size=batch_size,
                           chunk_seconds=chunk_seconds, video_size=size, crf=crf, device=device)  # fmt: skip
    typer.echo(json.dumps({"path": str(r.path), "n_frames": r.n_frames, "seconds": round(r.seconds, 3),
                           "fps_decode": round(r.fps_decode, 2)}))  # fmt: skip

