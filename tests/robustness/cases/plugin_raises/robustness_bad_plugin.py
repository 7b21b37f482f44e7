"""A plugin whose import fails."""

raise RuntimeError("cannot reach the feature store")
