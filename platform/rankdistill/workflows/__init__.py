"""End-to-end loops as library functions; ``jobs/*.py`` are thin wrappers around these."""
