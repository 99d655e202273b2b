"""The built-in deliveries (see :mod:`compliance.delivery` for the contract)."""
