"""execution layer (see DESIGN.md)."""
