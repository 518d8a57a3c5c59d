"""Immutable, versioned sets of resources per type, and what changed between two of them.
Pure: the runtime builds them, the xDS streams read them; nothing here is ever mutated.
"""
