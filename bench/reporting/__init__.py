"""Leaderboards, comparisons with published numbers, statistics and figures."""
