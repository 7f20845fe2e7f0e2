"""Generation (method.md section 5): audio + a talker bundle -> talking-face mp4.

``audio_io`` (features as preprocess writes them), ``pose`` (pose sources),
``model`` (bundle loading and writing), ``video`` (``generate_video``),
``commands`` (``daetalker generate``, ``train-s2l``, ``bundle``).
"""
