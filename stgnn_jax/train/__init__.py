"""Training: the optimiser (`optimizer`), the state (`state`), the jitted steps (`step`), one fold
(`loop`), the cross-validated protocol (`cross_validation`), devices (`sharding`), checkpoints
and encoder pretraining (`pretrain`)."""
