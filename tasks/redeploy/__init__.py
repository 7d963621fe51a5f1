"""Redeploy: pick up a patched upstream base image or a new model version (flows/redeploy.py)."""
