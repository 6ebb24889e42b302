"""Nodes of this stage (filled in by its issue)."""

NODES = []
