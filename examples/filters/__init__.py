"""Example filters (``examples/filters/filters.py``) and a catalog that chains them."""
