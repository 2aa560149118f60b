#!/usr/bin/env python
"""Predict masks for your own images: the same command as ``pdfnet predict`` (pdfnet/cli/predict.py)."""

import sys

from pdfnet.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
