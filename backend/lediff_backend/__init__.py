"""LEDiff backend: HDR environment generation for the Blender add-on.

Importing this package is instant and safe inside Blender: it imports nothing heavy.
numpy lives in ``hdr``/``classic``; torch and diffusers only in ``models``/``pipelines``.
"""

__version__ = "0.1.0"
