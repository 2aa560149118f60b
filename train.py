#!/usr/bin/env python
"""Train PDFNet: the same command as ``pdfnet train`` (pdfnet/cli/train.py); ``--help`` lists the options.

  python train.py --config configs/dis5k.yaml
  torchrun --nproc_per_node 4 train.py --config configs/dis5k.yaml
"""

import sys

from pdfnet.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
