# UperNet, 160k iterations, with a SecViT-B backbone (paper table 5b): the SecViT-S recipe with this backbone.
_base_ = ['./upernet_secvit-small_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(model_name='secvit_base', drop_path_rate=0.4),  # the model's ImageNet stochastic depth
    decode_head=dict(in_channels=[80, 160, 320, 512]),
    auxiliary_head=dict(in_channels=320))  # stage 3
