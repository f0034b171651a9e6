# Semantic FPN, 80k iterations, with a SecViT-B backbone (paper table 5a): the SecViT-T recipe with this backbone.
_base_ = ['./fpn_secvit-tiny_8xb2-80k_ade20k-512x512.py']

model = dict(
    backbone=dict(model_name='secvit_base', drop_path_rate=0.4),  # the model's ImageNet stochastic depth
    neck=dict(in_channels=[80, 160, 320, 512]))
