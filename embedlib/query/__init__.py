"""Using what is stored: vector indexes (``index``) and nearest-neighbour search (``search``)."""
