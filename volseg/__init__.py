"""volseg: blockwise segmentation of very large 3D electron-microscopy volumes.

Axis order is always ``z, y, x`` (channels first: ``c, z, y, x``); voxel sizes are
in nanometres.  See ``docs/architecture.md`` for the module map.
"""

__version__ = "0.1.0"
