#!/usr/bin/env python
"""Web demo (Gradio): the same command as ``pdfnet demo`` (pdfnet/cli/demo.py); needs pip install -e ".[demo]"."""

import sys

from pdfnet.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
