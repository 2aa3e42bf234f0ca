"""The compiled folder's format moved to :mod:`shiftpu.compiled.folder`, where the runtime may import it too.

This name remains only for ``shiftpu.report``, which still imports it from here; remove it once that import moves.
"""

from shiftpu.compiled.folder import ArtifactError, CompiledFolder, read_folder

__all__ = ["ArtifactError", "CompiledFolder", "read_folder"]
