"""The OpenAI-compatible proxy: validate, route, reserve, forward, settle."""
