"""``python -m daetalker.cli``: the ``daetalker`` command."""

from daetalker.cli import main

main()
