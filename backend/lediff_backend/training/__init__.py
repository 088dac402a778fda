"""Fine-tuning LEDiff on a collection of HDR images (the paper's §3.2-§4; the official code ships none).

Modules
-------
- ``data``: HDR files -> random views (panoramas through random cameras) -> simulated exposure
  brackets with sampled CRFs (the shared ``hdr.exposure`` code), optional latent cache on disk.
- ``decoder``: recipe (a), latent fusion + HDR decoder, log-space reconstruction + PatchGAN (``gan``).
- ``denoisers``: recipe (b), highlight / shadow denoisers from an SD UNet with a widened first layer.
- ``loop``: the shared ``accelerate`` loop: mixed precision, checkpoint/resume, EMA, loss log,
  validation images, progress; one process or many (``accelerate launch``).
- ``export``: official LEDiff folders that ``pipelines.lediff_engine.load_lediff_pipeline`` loads.
- ``config`` and ``configs/``: JSON defaults (the paper's values) and an ``accelerate`` config.

``lediff train decoder|highlight|shadow --data DIR --out DIR`` runs a recipe. Importing this
package imports nothing heavy.
"""
