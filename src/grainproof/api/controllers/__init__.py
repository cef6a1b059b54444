"""HTTP controllers: each parses a request, calls one service function, and shapes the response."""
