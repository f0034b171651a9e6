# The backbone block that every detection and segmentation config of this project shares: a registered timm model
# of this project as an OpenMMLab backbone (secvit/downstream/backbone.py). A config takes it as
#   model = dict(backbone=dict(_base_.secvit_backbone, <its own values>), ...)
# and sets what its family differs in (out_indices, norm_eval); a bigger model's config sets model_name and
# drop_path_rate only.
custom_imports = dict(imports=['secvit.downstream.backbone'], allow_failed_imports=False)

secvit_backbone = dict(
    _delete_=True,  # in place of the base config's ResNet
    type='SecvitBackbone',
    model_name='secvit_tiny',
    pretrained=None,  # ImageNet weights (best.pth of our pretraining, or a released file); set by `secvit detect` / `secvit segment`
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.1,  # the model's ImageNet stochastic depth (RMT, by the same authors, does the same)
    norm_eval=True,  # BN of the conv stem/downsamples at 2 images per GPU: keep ImageNet statistics (mmdet's BN backbones)
    frozen_stages=-1)  # nothing frozen (Swin, PVT and their families freeze nothing)
