# RetinaNet 1x with a SecViT-S backbone (paper table 4): the SecViT-T recipe with this backbone.
_base_ = ['./retinanet_secvit-tiny_fpn_1x_coco.py']

model = dict(
    backbone=dict(model_name='secvit_small', drop_path_rate=0.15),  # the model's ImageNet stochastic depth
    neck=dict(in_channels=[128, 256, 512]))
