"""Use cases shared by the CLI and the API: build a reference model, verify claims, evaluate on held-out data."""
