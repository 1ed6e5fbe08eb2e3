"""Running an ingest: the ``Ingestor`` (``ingestor``), its checks before writing (``prepare``), its
passes (``passes``), the two steps a batch goes through (``steps``), the report (``report``),
and the executors that move batches through the steps (``executors``, ``autoscale``)."""
