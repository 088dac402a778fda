"""Torch modules that the pipelines compose (one file per model family).

- ``fusion.LatentFusion``: LEDiff's learned latent exposure fusion (``vae/merge_model.pth``).
- ``caa.MultiViewCAA``: MVDiffusion's correspondence-aware attention blocks, hooked into a UNet.
- ``correspondence``: cameras of the view ring and pixel correspondences between views (numpy).
- ``gmodiff``: GMODiff's regression network (DaReg), prior tokens and guided VAE skips.
- ``lora``: low-rank adapters named as PEFT names them (GMODiff's released weights are PEFT LoRA).
- ``lfdiff``: LF-Diff's prior extractor (LPENet, LPENet_DM), prior denoiser and DHRNet, sized by
  ``lfdiff_config.LFDiffConfig``.
"""
