"""``daetalker serve``: the registered talker over HTTP, audio bytes in, mp4 bytes out.

A small ASGI app (Starlette on uvicorn) over the model's own pyfunc
(:class:`daetalker.registry.pyfunc.TalkerModel`), rather than MLflow's scoring
server, because that server answers a model error with the Python stack trace
and the whole request echoed back, and bounds neither the body, the audio nor
the number of generations running at once (docs in the README, "Serve a
speaker"; figures from ``bench/serve.py``).

| module | holds |
|---|---|
| ``admission.py`` | generation slots and the waiting queue: 429 when full, 503 past the deadline |
| ``champion.py`` | the served version: load a folder or ``models:/NAME@ALIAS``, reload when the alias moved |
| ``app.py`` | the routes (``/invocations``, ``/health``, ``/version``, ``/reload``) and JSON errors |
| ``server.py`` | uvicorn on 127.0.0.1 by default, and the optional alias poll |
"""
