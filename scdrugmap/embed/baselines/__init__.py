"""Baselines that run beside the foundation models, fitted on the store's own data."""
