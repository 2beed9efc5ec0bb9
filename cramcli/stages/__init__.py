"""One module per command; each exposes `run(output=..., **flags)`."""
