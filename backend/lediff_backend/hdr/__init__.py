"""numpy core: image I/O, colour, exposure, projection, tone mapping, metrics, sun.

Pixels are scene-linear Rec.709 RGB, float32, HxWx3, row 0 at the top. No torch here.
"""
