"""Log and directory sources. Each module reads one kind of source; see :mod:`connectors.base`."""
