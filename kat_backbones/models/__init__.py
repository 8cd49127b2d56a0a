"""KAT models. Importing this package registers the ``kat_*`` models in timm's registry."""

from .kat import KAT_ARCHS, create_kat

__all__ = ["KAT_ARCHS", "create_kat"]
