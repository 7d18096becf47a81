"""Converters from the python_ref model to phone builds; each backend is imported lazily."""
