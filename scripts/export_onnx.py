#!/usr/bin/env python
"""ONNX export checked with onnxruntime: the same command as ``pdfnet export`` (pdfnet/cli/export.py)."""

import sys

from pdfnet.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
