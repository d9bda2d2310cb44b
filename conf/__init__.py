"""Hydra configs; installed as the package data ``mnistapp.conf``."""
