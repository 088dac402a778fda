"""Test support shipped with the backend: ``tiny`` writes random-init models in the official layouts."""
