"""Images, layer store and containers."""
