"""The applications around the library: what the tools and tests use, never the library itself.

The core (:mod:`kat_backbones.ops`, ``layers``, ``models``, ``mm``) never imports this subpackage; it may import the
core. Nothing here is imported by ``import kat_backbones``; import the submodule you need:

- :mod:`kat_backbones.apps.demo_data`: small deterministic synthetic data sets in the COCO / ADE20K / ImageNet layouts.
- :mod:`kat_backbones.apps.viz`: the pictures (rational curves, fixed-size figures) of the plotting tools.
- :mod:`kat_backbones.apps.memory`: memory measurements of the benchmark tools.
"""
