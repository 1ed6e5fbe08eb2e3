"""The database layer: sessions that reconnect (``session``), the embedded server (``embedded``),
binary COPY (``copybin``) and what a table is (``relations``). Imports only the base modules."""
