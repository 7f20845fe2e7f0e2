"""Typed configs: profiles, YAML round trip, strict overrides."""

from __future__ import annotations

import pytest

from daetalker.config import PROFILES, Config, config_from_file, load_config
from daetalker.config.base import from_dict, parse_override
from daetalker.errors import ConfigError


@pytest.mark.parametrize("profile", PROFILES)
def test_yaml_round_trip_is_lossless(profile, tmp_path):
    cfg = load_config(profile, overrides=["dae.lr=3e-4", "synth.rate_wpm=[150, 160]"])
    path = cfg.save(tmp_path / "config.yaml")
    back = config_from_file(path)
    assert back == cfg
    assert back.hash() == cfg.hash()
    assert back.to_yaml() == cfg.to_yaml()


def test_profiles_select_sizes():
    tiny, pixel, b128, b128l, p256, p256l = (load_config(p) for p in PROFILES)
    assert pixel.dae.image_size < b128.dae.image_size < p256.dae.image_size
    assert b128.dae.channel_mult == (1, 1, 2, 3, 4)
    assert p256.dae.enc_channel_mult == (1, 1, 2, 2, 4, 4, 4)
    # the DAE may train below the crop resolution (frames are resized on load), never above it
    for cfg in (tiny, pixel, b128, b128l, p256, p256l):
        assert cfg.dae.image_size <= cfg.preprocess.resolution
    assert tiny.profile == "tiny"
    # latent profiles: 128 / 256 px frames from a 32x32x4 grid (factor 4 / 8)
    for cfg, factor in ((tiny, 4), (b128l, 4), (p256l, 8)):
        assert cfg.dae.space == "latent" and cfg.autoencoder.image_size == cfg.dae.image_size
        assert (cfg.autoencoder.factor, cfg.autoencoder.latent_size, cfg.autoencoder.latent_channels) == (factor, 32, 4)
    assert {pixel.dae.space, b128.dae.space, p256.dae.space} == {"pixel"} and tiny.dae.image_size == 128


def test_override_types_and_precedence(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("dae:\n  lr: 0.001\n  batch_size: 8\n")
    cfg = load_config("tiny", user, ["dae.lr=2e-4"])
    assert cfg.dae.lr == pytest.approx(2e-4)  # --set beats the file
    assert cfg.dae.batch_size == 8  # the file beats the profile
    assert isinstance(load_config("tiny", overrides=["dae.lr=1"]).dae.lr, float)


@pytest.mark.parametrize(
    "override, key",
    [
        ("dae.lrr=1", "dae.lrr"),
        ("daee.lr=1", "daee"),
        ("dae.batch_size=abc", "dae.batch_size"),
        ("dae.batch_size=1.5", "dae.batch_size"),
        ("dae.bf16=3", "dae.bf16"),
        ("dae.channel_mult=[1,x]", "dae.channel_mult[1]"),
        ("synth.size=31", "synth"),
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", overrides=[override])
    assert key in str(e.value)


def test_unknown_key_in_yaml_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preprocess:\n  resolutoin: 64\n")
    with pytest.raises(ConfigError, match="preprocess.resolutoin"):
        load_config("tiny", bad)


def test_unknown_profile_and_malformed_override():
    with pytest.raises(ConfigError, match="tiny, tiny-pixel, base128, base128-latent, paper256, paper256-latent"):
        load_config("huge")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("dae.lr")


def test_from_dict_rejects_non_mapping_section():
    with pytest.raises(ConfigError, match="dae"):
        from_dict(Config, {"dae": 3})
