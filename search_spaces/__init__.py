"""The shipped YAML search spaces (data; this file only makes them importable resources)."""
