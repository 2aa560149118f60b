#!/usr/bin/env python
"""Pseudo-depth for a dataset with Depth Anything V2: the same command as ``pdfnet depth`` (pdfnet/cli/depth.py)."""

import sys

from pdfnet.cli.depth import main

if __name__ == "__main__":
    sys.exit(main())
