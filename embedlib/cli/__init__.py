"""The ``embedlib`` command: ``main`` (in ``app``) builds the parser from one module per command
(``ingest``, ``bench``, ``query`` for index and search, ``load``, ``demo``, ``status``); ``arguments`` holds
what they share (each setting's flag comes from ``options.Settings``), ``signals`` and ``text``
how the process meets Ctrl-C, pipes and locales; ``benchmark`` and ``machine`` measure for
``embedlib bench``."""

from embedlib.cli.app import build_parser, main
from embedlib.cli.arguments import positive_int

__all__ = ["build_parser", "main", "positive_int"]
