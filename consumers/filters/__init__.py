"""Filters: steps of a turn's chain that pass, change or block it (``router/filters.py``)."""

from routeyard.consumers.filters.filter import Filter, FilterResult, FilterRunner, filter

__all__ = ["Filter", "FilterResult", "FilterRunner", "filter"]
