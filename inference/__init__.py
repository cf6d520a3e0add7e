"""Using trained generators: loading them from a recipe, super-resolving images, and test.py's run."""
