"""Preset TOML files (quick, paper), read with tomllib."""
