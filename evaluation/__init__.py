"""What a trained VAE is worth: the evaluation pass and its metrics, the IWAE bound, pictures
and posterior means (``--predict``), ``--evaluate``, and the embedding comparison (methods,
the KNN protocol, its report)."""
