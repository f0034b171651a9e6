# Cascade Mask R-CNN 3x+MS with a SecViT-B backbone (paper table 3b): the SecViT-S recipe with this backbone.
_base_ = ['./cascade-mask-rcnn_secvit-small_fpn_ms-3x_coco.py']

model = dict(
    backbone=dict(model_name='secvit_base', drop_path_rate=0.4),  # the model's ImageNet stochastic depth
    neck=dict(in_channels=[80, 160, 320, 512]))
