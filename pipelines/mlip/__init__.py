"""adamlab."""
