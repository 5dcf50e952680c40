"""Loading, validating, preprocessing and caching the two datasets of the homework."""
from data.errors import DataError

__all__ = ["DataError"]
