"""Model registry: packaged models, gated champion/challenger promotion, audit trail.

Entry points for the pipeline and the CLI (one module each)::

    from daetalker.registry.register import register_model   # run -> new version of talker-<speaker>
    from daetalker.registry.promote import promote, rollback  # gate + alias moves, audited
    from daetalker.registry.history import history            # every decision and alias move

Functions are not re-exported here: ``promote`` and ``history`` would shadow
their modules. ``pyfunc`` and ``log_model`` import mlflow.pyfunc, so they are
imported on use. README.md beside this file describes the protocol and the audit trail.
"""
