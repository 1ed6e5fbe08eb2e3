"""The target side: creating and checking the target (``schema``), writing vectors and metrics
(``sink``, ``metrics``), what the target serves (``provenance``) and its upkeep (``upkeep``)."""
