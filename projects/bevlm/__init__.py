"""bevlm: BEV-grounded driving vision-language models.

The registry scope of this package is ``bevlm`` (see :mod:`bevlm.registry`).
Sub-packages are imported lazily by the registries' ``locations``.
"""

__version__ = "0.1.0"
