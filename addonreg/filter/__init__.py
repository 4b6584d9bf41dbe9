"""A downloadable filter of the whole registry (docs/filter.md)."""
