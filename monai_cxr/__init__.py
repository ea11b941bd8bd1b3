"""monai-cxr: how input resolution changes what a CNN can diagnose on chest radiographs.

A benchmark harness in the MONAI ecosystem. Light on import: torch and monai are
imported only by the parts that train or evaluate networks.
"""

__version__ = "0.1.0"
