"""market layer (see DESIGN.md)."""
