"""``python -m dmcore``: the command line of the book's lab (:mod:`dmcore.lab.cli`)."""

from .lab.cli import main

raise SystemExit(main())
