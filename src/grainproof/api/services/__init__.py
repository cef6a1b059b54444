"""The service's use cases, one module per area; the API controllers and the CLI both call these."""
