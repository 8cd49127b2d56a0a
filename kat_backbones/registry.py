"""``kat_backbones.registry``: where mmengine looks for a scope's registries (``<scope>.registry``).

Re-exports :mod:`kat_backbones.mm.registry` so ``default_scope='kat_backbones'`` configs resolve without a warning.
"""

from .mm.registry import *  # noqa: F401,F403
from .mm.registry import __all__  # noqa: F401
