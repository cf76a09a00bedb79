"""pgolf: parameter golf toolkit. Importing it touches neither CUDA nor logging."""

__version__ = "0.1.0"
