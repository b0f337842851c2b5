"""LLM providers behind one small protocol."""
