"""asanlab init: an asanlab.yml that reproduces the user's production PHP under the sanitizers."""
