# Semantic FPN, 80k iterations, with a SecViT-T backbone on ADE20K (paper section 4.3, table 5).
# Paper: PVT's settings, 80k iterations, 512x512 crops, test with the short side resized to 512.
# PVT's recipe (as RMT and BiFormer cite it): AdamW lr 1e-4, weight decay 1e-4, poly decay (power 0.9), batch 16.
_base_ = ['mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py', '../../_base_/secvit_backbone.py']

# PVT's Semantic FPN: SyncBN in the head. sync_bn turns every other BN of the model (the backbone's) into SyncBN
# too when training runs on several devices; on one device mmengine reverts all of them to BN.
norm_cfg = dict(type='SyncBN', requires_grad=True)
sync_bn = 'torch'

model = dict(
    pretrained=None,  # the backbone loads its own ImageNet weights
    backbone=dict(_base_.secvit_backbone, norm_eval=False),  # the stem's and downsamples' BN train, synchronised (sync_bn above)
    neck=dict(in_channels=[64, 128, 256, 512]),
    decode_head=dict(norm_cfg=norm_cfg))

# PVT: batch 16 (8 GPUs x 2 images); lr 1e-4 is for that batch. `secvit segment` keeps the global batch of 16 on
# any device count by gradient accumulation (secvit/downstream/config.py); stock tools train GPUs x 2 images.
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)

train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=80000, by_epoch=False)]  # PVT: no warm-up

# checkpoints written atomically (temporary file + rename): a kill never leaves a torn file to resume from
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=8000, max_keep_ckpts=2, backend_args=dict(backend='atomic_local')))
