# RetinaNet 1x with a SecViT-T backbone on COCO 2017 (paper section 4.2, table 4).
# Paper: AdamW, lr 1e-4, weight decay 1e-4, 12 epochs, single scale (short side 800, long side <= 1333).
# Where the paper is silent, Swin's RetinaNet recipe decides; each such choice says so below.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '../../_base_/secvit_backbone.py']

model = dict(
    backbone=dict(_base_.secvit_backbone, out_indices=(1, 2, 3)),  # Swin's RetinaNet: FPN on strides 8-32 plus two extra levels
    neck=dict(in_channels=[128, 256, 512], start_level=0, num_outs=5))

# Swin: batch 16 (8 GPUs x 2 images); lr 1e-4 is for that batch (scale it linearly for another).
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),  # Swin: 500-iteration linear warm-up
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),  # Swin: steps at 8/11
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    # Swin: no weight decay on norms (here also biases and layer-scale gammas, as in our ImageNet recipe)
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, custom_keys={'.gamma': dict(decay_mult=0.0)}))

# checkpoints written atomically (temporary file + rename): a kill never leaves a torn file to resume from
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2, backend_args=dict(backend='atomic_local')))
