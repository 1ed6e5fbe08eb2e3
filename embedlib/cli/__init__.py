"""The ``embedlib`` command: ``main`` (in ``app``) builds the parser from one module per command
(``ingest``, ``bench``, ``query`` for index and search, ``load``, ``demo``); ``arguments`` holds
what they share, ``signals`` and ``text`` how the process meets Ctrl-C, pipes and locales."""

from embedlib.cli.app import build_parser, main
from embedlib.cli.arguments import positive_int

__all__ = ["build_parser", "main", "positive_int"]
