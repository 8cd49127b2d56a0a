"""Layers of KAT: the group-rational activation, the GR-KAN layer, and the rational init table."""

from .group_rational import GroupRational, rational_second_moment
from .kan import KAN, KanInit, kan_init_
from .karat import FourierKArAt, KArAtAttention, KArAtWindowAttention  # after GroupRational (FLOP counter)
from .rational_init import RATIONAL_INITS, available_inits, get_rational_init

__all__ = [
    "GroupRational",
    "KAN",
    "KanInit",
    "kan_init_",
    "rational_second_moment",
    "RATIONAL_INITS",
    "available_inits",
    "get_rational_init",
    "FourierKArAt",
    "KArAtAttention",
    "KArAtWindowAttention",
]
