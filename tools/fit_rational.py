#!/usr/bin/env python
"""Fit group-rational coefficients to an activation under the KAT formula and print them.

    F(x) = (a0 + a1 x + ... + am x^m) / (1 + |b1| |x| + ... + |bn| |x|^n)

Example (the command behind the packaged gelu entry of ``kat_backbones.layers.rational_init``)::

    python tools/fit_rational.py --fn gelu --order 5 4 --range -3 3 --weighting uniform

Prints the max error on [-3, 3], the rms error and the coefficients (numerator a0..am, denominator b1..bn);
``--json`` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from kat_backbones.layers.rational_fit import ACTIVATIONS, fit_rational


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fn", required=True, choices=sorted(ACTIVATIONS), help="target activation")
    parser.add_argument("--order", type=int, nargs=2, default=(5, 4), metavar=("M", "N"),
                        help="numerator and denominator orders (default: 5 4)")
    parser.add_argument("--range", type=float, nargs=2, default=(-3.0, 3.0), metavar=("LO", "HI"),
                        help="fit interval (default: -3 3)")
    parser.add_argument("--weighting", choices=("uniform", "gaussian"), default="uniform",
                        help="grid weights: uniform, or gaussian exp(-x^2/2) (default: uniform)")
    parser.add_argument("--points", type=int, default=4001, help="grid points on the fit interval (default: 4001)")
    parser.add_argument("--max-iter", type=int, default=2000, help="L-BFGS iterations (default: 2000)")
    parser.add_argument("--no-minimax", action="store_true", help="skip the minimax (max-error) polish")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the fit and prints the result."""
    args = parse_args(argv)
    start = time.perf_counter()
    fit = fit_rational(
        args.fn,
        order=tuple(args.order),
        fit_range=tuple(args.range),
        weighting=args.weighting,
        num_points=args.points,
        max_iter=args.max_iter,
        minimax=not args.no_minimax,
    )
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({
            "fn": args.fn, "order": list(args.order), "range": list(args.range), "weighting": args.weighting,
            "numerator": fit.numerator, "denominator": fit.denominator, "max_error": fit.max_error,
            "rms_error": fit.rms_error, "eval_range": list(fit.eval_range), "seconds": seconds,
        }))
        return 0
    lo, hi = fit.eval_range
    print(f"fn={args.fn} order={tuple(args.order)} range={tuple(args.range)} weighting={args.weighting} "
          f"({seconds:.1f} s)")
    print(f"max error on [{lo:g}, {hi:g}]: {fit.max_error:.3e}   rms: {fit.rms_error:.3e}")
    print(f"numerator   = {fit.numerator!r}")
    print(f"denominator = {fit.denominator!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
