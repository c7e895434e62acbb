"""Recipes: data, model, trainer and bundle wired together for each task (used by the CLI)."""
