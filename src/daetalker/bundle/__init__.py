"""The model bundle: one folder with a talker's weights, statistics and config, hashed in a manifest.

Below ``generate`` (which loads bundles) and ``registry`` (which logs, fetches
and verifies them); above ``train`` (whose checkpoints and latent statistics it
packages).

- ``format``: the folder format, stdlib only: ``write_bundle``,
  ``read_manifest``, ``verify_bundle``, ``manifest_sha256``; re-exported here;
- ``build``: bundles from training outputs (``bundle_from_training``, ``daetalker
  bundle``) and random test bundles (``make_test_bundle``); imports torch, so
  it is imported as ``daetalker.bundle.build``.
"""

from daetalker.bundle.format import (
    CONFIG,
    DAE,
    FORMAT,
    LATENT_STATS,
    MANIFEST,
    REQUIRED,
    S2L,
    BundleFile,
    BundleManifest,
    file_sha256,
    manifest_sha256,
    read_manifest,
    verify_bundle,
    write_bundle,
)

__all__ = ["CONFIG", "DAE", "FORMAT", "LATENT_STATS", "MANIFEST", "REQUIRED", "S2L", "BundleFile", "BundleManifest",
           "file_sha256", "manifest_sha256", "read_manifest", "verify_bundle", "write_bundle"]
