"""Diffusers pipelines (torch). Import the submodules; this package imports nothing itself.

- ``lediff``: ``LEDiffPipeline``, LDR -> HDR and text -> HDR with latent exposure diffusion.
- ``lediff_engine``: load the official folders; ``lediff_itm`` / ``lediff_text2hdr`` on numpy.
- ``tiling``: overlapping, longitude-wrapping tiles (latent windows, tiled VAE).
- ``itm_blend``: keep the unclipped input pixels (the paper's ITM blend).
- ``previews``: approximate RGB of a latent for progress previews.
- ``mvdiffusion``: ``MVDiffusionPipeline``, panorama views denoised jointly with CAA (text or photo).
- ``hdr_panorama``: prompt/photo -> MVDiffusion views -> full sphere -> LEDiff -> 2:1 HDR.
- ``gmodiff``: ``GMODiffPipeline``, three exposures -> gain map in one diffusion step -> HDR;
  ``merge_bracket``, the ``gmodiff`` merge engine.
"""
