"""Queued inference: ``POST /v1/jobs`` now, an answer when a node of the model is up."""
