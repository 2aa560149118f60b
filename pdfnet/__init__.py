"""PDFNet: high-precision dichotomous image segmentation with a depth integrity prior and fine-grained patches."""

__version__ = "0.1.0"
