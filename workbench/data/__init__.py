"""Dataset manifests, video decoding, frame sampling and the latent/embedding cache."""
