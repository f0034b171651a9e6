# Mask R-CNN 3x+MS with a SecViT-S backbone (paper table 3a).
# Paper: AdamW, lr 1e-4, weight decay 0.05, 36 epochs, random short side 480-800 (long side <= 1333).
# The backbone, optimizer and batch are those of the 1x config.
_base_ = ['./mask-rcnn_secvit-small_fpn_1x_coco.py']

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize', scales=[(1333, 480 + 32 * i) for i in range(11)], keep_ratio=True),  # 480..800
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),  # Swin: as in 1x
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),  # Swin: 27/33
]
