"""The backend protocol, seen from the add-on: a shim that exists only in the repository.

The protocol has one source, ``backend/lediff_backend/protocol.py`` (stdlib only), and the
add-on imports it as ``from . import protocol`` wherever it runs from:

- the built extension: ``scripts/build_extension.py`` leaves this shim out (manifest
  ``paths_exclude_pattern``) and puts a copy of the backend's module, with the modules it
  imports relatively (``errors.py``), at the root of the zip in its place;
- a checkout (tests, development): this shim replaces itself in ``sys.modules`` with the
  backend's module (the import system then hands out that module), adding the repository's
  ``backend/`` folder to ``sys.path`` when the backend package is not installed.
"""

import os
import sys

try:
    import lediff_backend.protocol as _source
except ImportError:
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "backend"))
    import lediff_backend.protocol as _source

sys.modules[__name__] = _source
