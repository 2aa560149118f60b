#!/usr/bin/env python
"""Evaluate DIS predictions: the same command as ``pdfnet eval`` (pdfnet/cli/evaluate.py); ``--help`` lists the
options.

  python evaluate.py --pred_dir results/DIS-TE1 --gt_dir DIS5K/DIS-TE1/gt
  python evaluate.py --ckpt best.pth --split DIS-TE1 --data_root DIS5K
"""

import sys

from pdfnet.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
