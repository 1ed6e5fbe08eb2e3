"""Encoders: the protocol and resolving a model (``base``), the local sentence-transformers model
(``local``, ``packing``), an embeddings service (``remote``, ``replies``), what a model is
(``identity``) and texts that fail (``failures``). Knows nothing of databases."""
