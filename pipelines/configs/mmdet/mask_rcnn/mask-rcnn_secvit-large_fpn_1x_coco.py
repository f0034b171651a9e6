# Mask R-CNN 1x with a SecViT-L backbone (paper table 4): the SecViT-T recipe with this backbone.
_base_ = ['./mask-rcnn_secvit-tiny_fpn_1x_coco.py']

model = dict(
    backbone=dict(model_name='secvit_large', drop_path_rate=0.5),  # the model's ImageNet stochastic depth
    neck=dict(in_channels=[112, 224, 448, 640]))
