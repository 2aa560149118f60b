"""Data: robust image/mask/depth I/O, datasets, transforms, synthetic scenes."""
