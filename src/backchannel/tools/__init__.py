"""Tools: what the model may call, and where each call runs."""
