"""The command-line tools: ``python tools/NAME.py --help``.

Each tool parses its command line and calls the package; what is reusable lives in :mod:`kat_backbones.apps` (the
train/test start-up in ``apps.runner``, the demo flow in ``apps.demo``, run logs, FLOP targets, pictures, demo data).
This file makes the folder importable as ``tools`` so that the tests call a tool's ``main(argv)`` in-process
(``from tools import train``) instead of loading it by file path.
"""
