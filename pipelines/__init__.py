"""diffusers integration: :class:`ZipARPipeline` and the diffusers components for LlamaGen and Chameleon's VQGAN.

Importing this package imports diffusers; ``import zipar`` alone does not (``zipar.ZipARPipeline`` is loaded
on first use).
"""
from .components import ChameleonVQGANModel, LlamaGenGPTModel, LlamaGenVQModel
from .pipeline_output import ZipARPipelineOutput
from .pipeline_zipar import ZipARPipeline

__all__ = [
           "ChameleonVQGANModel",
           "LlamaGenGPTModel",
           "LlamaGenVQModel",
           "ZipARPipeline",
           "ZipARPipelineOutput",
]
