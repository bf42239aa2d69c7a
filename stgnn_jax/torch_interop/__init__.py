"""The reference's PyTorch checkpoints <-> Flax params. Depends on `nn`; nothing in `nn` depends
on it. Reading a state dict never imports torch (`state_dict`); `convert` loads `.pth` files."""
