"""Training and the commands built on it: the Lightning module, objectives, optimisers,
callbacks, checkpointing, and the fit / evaluate / sample / reconstruct functions."""
