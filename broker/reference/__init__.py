"""Reference data from schemas/: the item catalog, regional overrides, code mappings, policy."""
