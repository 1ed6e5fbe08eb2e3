"""The source side: finding and checking the source table (``tables``), reading the rows that need
work (``reader``, ``rows``), loading text files into a table (``loader``), and sharing one table
between runs (``sharing``: holders, leases, claims)."""
