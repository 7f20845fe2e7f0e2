"""Preprocessing: speaker videos in, validated and versioned training data out.

``preprocess_dataset`` (``daetalker preprocess``) turns a folder of videos into
the layout documented in docs/dataset.md; ``validate_dataset``
(``daetalker validate``) checks it with great-expectations.
"""
