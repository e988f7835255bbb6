"""``python -m stream.cli``: the same as the ``imgstream`` command."""

from stream.cli import main

main()
