# UperNet, 160k iterations, with a SecViT-S backbone on ADE20K (paper section 4.3, table 5).
# Paper: Swin's settings, AdamW, weight decay 0.01, 1500-iteration warm-up, 512x512 crops, test with
# the short side resized to 512. Swin's recipe for the rest: lr 6e-5, poly decay (power 1.0) after
# the warm-up, batch 16, auxiliary FCN head on stage 3 (loss weight 0.4), no decay on norms.
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py', '../../_base_/secvit_backbone.py']

# Swin's UperNet: SyncBN in both heads. sync_bn turns every other BN of the model (the backbone's) into SyncBN
# too when training runs on several devices; on one device mmengine reverts all of them to BN.
norm_cfg = dict(type='SyncBN', requires_grad=True)
sync_bn = 'torch'

model = dict(
    pretrained=None,  # the backbone loads its own ImageNet weights
    # SecViT-S (the smallest UperNet row of table 5); the stem's and downsamples' BN train, synchronised (sync_bn above)
    backbone=dict(_base_.secvit_backbone, model_name='secvit_small', drop_path_rate=0.15, norm_eval=False),
    decode_head=dict(in_channels=[64, 128, 256, 512], norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, norm_cfg=norm_cfg))  # stage 3

# Swin: batch 16 (8 GPUs x 2 images); lr 6e-5 is for that batch. `secvit segment` keeps the global batch of 16 on
# any device count by gradient accumulation (secvit/downstream/config.py); stock tools train GPUs x 2 images.
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)

optim_wrapper = dict(
    # Swin: no weight decay on norms (here also biases and layer-scale gammas, as in our ImageNet recipe)
    paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.0, bias_decay_mult=0.0, custom_keys={'.gamma': dict(decay_mult=0.0)}))

# checkpoints written atomically (temporary file + rename): a kill never leaves a torn file to resume from
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=16000, max_keep_ckpts=2, backend_args=dict(backend='atomic_local')))
