"""The image: a recipe read and checked (recipe.py), its sources fetched and pinned (sources.py),
rendered to a Dockerfile (render.py), built (build.py), proved instrumented (check.py), chosen for a
command (choice.py), and pushed or pulled (registry.py, references.py)."""
