"""``python -m medseg.cli``: the same as the ``medseg`` command."""

from medseg.cli import main

main()
