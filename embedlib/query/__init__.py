"""Using what is stored: vector indexes (``index``), nearest-neighbour search (``search``) and where a
table stands (``status``)."""
