#!/usr/bin/env python
"""Convert an official PDFNet checkpoint: the same command as ``pdfnet convert`` (pdfnet/cli/convert.py)."""

import sys

from pdfnet.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
