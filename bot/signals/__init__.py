"""signals layer (see DESIGN.md)."""
