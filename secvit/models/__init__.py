"""Model families. Importing this package registers them with timm."""

from secvit.models import pacavit, sec_fastervit, sec_swin, stvit  # noqa: F401  (register their models)
from secvit.models.registry import available_models, create
from secvit.models.secvit import VARIANTS, SecViT, checkpoint_filter_fn

__all__ = ["SecViT", "VARIANTS", "available_models", "checkpoint_filter_fn", "create"]
