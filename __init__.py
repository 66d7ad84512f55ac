"""ZipAR: fast, faithful decoding of autoregressive image models.

This folder is the ``zipar`` Python package and, dropped into ``ComfyUI/custom_nodes/``, a ComfyUI node
pack. Importing it is cheap: torch, transformers and diffusers load only when something that needs them
is used.
"""
__version__ = "0.1.0"
