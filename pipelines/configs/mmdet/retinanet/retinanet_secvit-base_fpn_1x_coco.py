# RetinaNet 1x with a SecViT-B backbone (paper table 4): the SecViT-T recipe with this backbone.
_base_ = ['./retinanet_secvit-tiny_fpn_1x_coco.py']

model = dict(
    backbone=dict(model_name='secvit_base', drop_path_rate=0.4),  # the model's ImageNet stochastic depth
    neck=dict(in_channels=[160, 320, 512]))
