"""``python -m pdfnet <command> ...`` = the ``pdfnet`` console command."""

from .cli import console

if __name__ == "__main__":
    console()
