"""Layers of KAT: the group-rational activation, the GR-KAN layer, the rational init table and Fourier-KArAt
attention (operator and attention modules; putting them into models is :mod:`kat_backbones.models.karat`)."""

from .group_rational import GroupRational, rational_second_moment
from .kan import KAN, KanImpl, KanInit, kan_init_
from .kan_block import KANBlock
from .karat import FourierKArAt, KArAtAttention, KArAtWindowAttention
from .rational_init import RATIONAL_INITS, available_inits, get_rational_init

__all__ = [
    "GroupRational",
    "KAN",
    "KanImpl",
    "KanInit",
    "KANBlock",
    "kan_init_",
    "rational_second_moment",
    "RATIONAL_INITS",
    "available_inits",
    "get_rational_init",
    "FourierKArAt",
    "KArAtAttention",
    "KArAtWindowAttention",
]
