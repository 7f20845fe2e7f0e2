"""Pipeline wiring: run context, steps, local runner, compile."""
