"""Detectors, one file per method; registered by name in bench.registry."""
