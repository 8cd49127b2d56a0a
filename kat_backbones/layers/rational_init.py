"""Initial coefficients of the group-rational activation, accurate under THE formula of ``kat_backbones.ops``.

    F(x) = (a0 + a1 x + ... + a5 x^5) / (1 + |b1| |x| + |b2| |x|^2 + |b3| |x|^3 + |b4| |x|^4)

Provenance:

- ``identity``: exact, for every order (a1 = 1, everything else 0).
- ``swish`` (= ``silu``): the coefficients of the released KAT models' act2 (KAT reference implementation; max
  error 1.2e-6 on [-3, 3] under this formula). The reference's own ``gelu`` entry is not GELU under this formula
  (F(3) = 1.53 instead of 3.00), so gelu and the others are fitted here.
- ``gelu`` (exact, erf-based), ``relu``, ``tanh``, ``sigmoid``: fitted with ``tools/fit_rational.py``, e.g.::

      python tools/fit_rational.py --fn gelu --order 5 4 --range -3 3 --weighting uniform

  (same command with ``--fn relu`` / ``tanh`` / ``sigmoid``). Max |F - f| on [-3, 3]: gelu 1.28e-3, tanh 1.96e-6,
  sigmoid 4.8e-9, relu 1.28e-2. ReLU's kink at 0 caps (5, 4) accuracy near 1.3e-2: with the odd part represented
  exactly, the even part must approximate |x| / 2 by a type (4, 4) even rational, whose best uniform error on
  [-3, 3] is about 1.28e-2 (use a higher order for a closer ReLU).

The coefficients are accurate on [-3, 3]; outside it a (5, 4) rational grows like a linear function (x) at most
and need not follow the target (notably relu for x < -3).
"""

from __future__ import annotations

__all__ = ["RATIONAL_INITS", "INIT_ALIASES", "available_inits", "get_rational_init"]

# name -> {(m, n): (numerator a0..am, denominator b1..bn)}
RATIONAL_INITS: dict[str, dict[tuple[int, int], tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "swish": {
        (5, 4): (
            (3.054879741161051e-07, 0.5000007853744493, 0.24999783422824703, 0.05326628273219478,
             0.005803034571292244, 0.0002751961022402342),
            (-4.111554955950634e-06, 0.10652899335007572, -1.2690007399796238e-06, 0.0005502331264140556),
        ),
        (3, 2): (  # ablation order; fit_rational.py --fn swish --order 3 2: max error 0.0031
            (0.0031202051212879827, 0.5000526090872133, 0.2408751963742487, 0.033477869404510495),
            (0.00011051974035251993, 0.06692956315009471),
        ),
        (7, 6): (  # ablation order; fit_rational.py --fn swish --order 7 6: max error 1.5e-07
            (7.064551486194955e-12, 0.4999999999795427, 0.2499999998837075, 0.05675337591729335,
             0.007543354874575678, 0.000624392087524029, 3.080516287640167e-05, 7.146699199933604e-07),
            (-3.375870798183467e-10, 0.11350675266564188, -9.024693527204253e-10, 0.0012487846604307754,
             -1.268725680070304e-10, 1.4293527035302844e-06),
        ),
    },
    "gelu": {
        (5, 4): (
            (-0.001272470204329023, 0.4999881720806336, 0.4081390427231617, 0.10677472609562219,
             0.008594408313129116, 3.3878026899794787e-06),
            (6.077471721091779e-08, 0.2134941648768361, -3.777185655348993e-05, -9.942774255340715e-12),
        ),
    },
    "relu": {
        (5, 4): (
            (0.01280624406786564, 0.5005666232233063, 2.790745717255603, 4.537408124739036, 2.5838601016452576,
             0.46264604033127543),
            (-0.00970097304628143, 9.056123101148495, -0.011647591631629923, 0.9230938566408575),
        ),
    },
    "tanh": {
        (5, 4): (
            (-3.363251641820445e-11, 1.000033672234821, -8.971560836214965e-11, 0.10619631304567981,
             -2.4081673963023918e-11, 0.0008116709375703817),
            (-0.0001682412326374216, 0.4393360945939499, -9.122914592796094e-13, 0.0140772849710384),
        ),
    },
    "sigmoid": {
        (5, 4): (
            (0.5000000003449588, 0.24999999476427143, 0.05544263838020024, 0.0068880027579690355,
             0.0004848728211859499, 1.5645139307444476e-05),
            (3.300706517134211e-09, 0.11088527281247534, 1.7262244272897576e-09, 0.000969745391181609),
        ),
    },
}

INIT_ALIASES: dict[str, str] = {"silu": "swish"}
"""Other names accepted for an init (``silu`` is ``swish``)."""


def available_inits() -> list[str]:
    """Names accepted by :func:`get_rational_init` (aliases included)."""
    return sorted({"identity", *RATIONAL_INITS, *INIT_ALIASES})


def get_rational_init(name: str, order: tuple[int, int] = (5, 4)) -> tuple[list[float], list[float]]:
    """Coefficients (numerator a0..am, denominator b1..bn) of the init called ``name`` at ``order`` = (m, n).

    Raises:
        ValueError: unknown name, or no packaged coefficients for this order (fit them with
            ``tools/fit_rational.py --fn NAME --order M N``).
    """
    m, n = (int(v) for v in order)
    key = INIT_ALIASES.get(name.lower(), name.lower())
    if key == "identity":
        if m < 1:
            raise ValueError(f"identity init needs a numerator order m >= 1, got {order}")
        return [0.0, 1.0] + [0.0] * (m - 1), [0.0] * n
    if key not in RATIONAL_INITS:
        raise ValueError(f"unknown rational init {name!r}; available: {available_inits()}")
    try:
        num, den = RATIONAL_INITS[key][(m, n)]
    except KeyError:
        raise ValueError(
            f"no packaged {name!r} coefficients for order {(m, n)} (have {sorted(RATIONAL_INITS[key])}); fit them "
            f"with `python tools/fit_rational.py --fn {key} --order {m} {n}`"
        ) from None
    return list(num), list(den)
