"""Evaluation metrics (method.md section 6), one module per family, plain arrays in and out.

- ``mfcc``, ``syncnet``, ``lse``: lip sync, LSE-D / LSE-C with a SyncNet expert;
  ``syncnet_train``: training that expert on the speaker's data; ``calibration``:
  checking an expert on held-out clips (own vs shifted vs another clip's audio);
- ``fid``: FID on Inception-v3 pool features;
- ``pose_metrics``: head-pose diversity, error against ground truth, Beat Align;
- ``landmark_metrics``: M-LMD on mouth landmarks;
- ``image_metrics``: PSNR / SSIM of DAE reconstructions;
- ``first_stage``: the held-out report of a first-stage autoencoder (PSNR, SSIM, mouth r).

Nothing is imported here, so ``daetalker --help`` does not pay for torch.
"""
