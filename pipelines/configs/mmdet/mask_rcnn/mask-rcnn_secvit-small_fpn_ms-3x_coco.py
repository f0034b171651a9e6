# Mask R-CNN 3x+MS with a SecViT-S backbone (paper table 3a).
# Paper: AdamW, lr 1e-4, weight decay 0.05, 36 epochs, "multi-scale training ... randomly resize the shorter
# side of images between 480 to 800 pixels", the "commonly used 3x+MS setting" following previous works
# (Swin, CSWin). Their released 3x configs (and RMT's, by the same authors, and mmdet's Swin ms-crop-3x) draw
# one of two branches per image: resize the short side to 480..800 (long side <= 1333); or resize it to
# 400/500/600, crop a random 384..600 box, then resize to 480..800. So does this config.
# The backbone, optimizer and batch are those of the 1x config.
_base_ = ['./mask-rcnn_secvit-small_fpn_1x_coco.py']

multi_scale = [(1333, 480 + 32 * i) for i in range(11)]  # short side 480, 512, ..., 800; long side <= 1333
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),  # Swin: flip first, then one of the two branches
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=multi_scale, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(1333, 400), (1333, 500), (1333, 600)], keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=multi_scale, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),  # Swin: as in 1x
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),  # Swin: 27/33
]
