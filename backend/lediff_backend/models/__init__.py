"""Torch modules that the pipelines compose (one file per model family).

- ``fusion.LatentFusion``: LEDiff's learned latent exposure fusion (``vae/merge_model.pth``).
"""
