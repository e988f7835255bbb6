"""``python -m imgstream.cli``: the same as the ``imgstream`` command."""

from imgstream.cli import main

main()
