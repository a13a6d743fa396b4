"""The shared training engine: backbones, batched augmentation, shifts, losses, training loop."""
