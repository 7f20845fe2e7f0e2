"""Generation (method.md section 5): audio + a talker bundle folder -> talking-face mp4.

``audio_io`` (features as preprocess writes them), ``pose`` (pose sources),
``model`` (a verified bundle folder -> a loaded ``Talker``), ``video``
(``generate_video``: load and render; ``render_video``: render with a loaded
talker). Bundles are written by ``daetalker.bundle``; registered
``models:/`` URIs are fetched into folders by ``daetalker.registry``.
"""
