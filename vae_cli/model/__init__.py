"""The maths: likelihood families, priors, networks, the VAE models and the estimators.

Pure PyTorch: nothing here knows about Lightning, files or the command line."""
