"""PDFNet model components."""

from .pdfnet import PDFNet, count_parameters

__all__ = ["PDFNet", "count_parameters"]
