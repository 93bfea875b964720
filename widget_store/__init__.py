"""Widget Store: a storefront whose checkout is a durable DBOS saga."""

__version__ = "0.2.0"
