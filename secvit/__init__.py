"""secvit: reproduction pipeline for SecViT (Semantic Equitable Clustering Vision Transformer).

Importing the package registers the SecViT models with timm.
"""

from secvit import models  # noqa: F401  (registers secvit_* with timm)
from secvit.errors import SecvitError

__version__ = "0.1.0"
__all__ = ["SecvitError", "__version__"]
