"""Local training: the model runner, executors that batch it (sequential, vectorized, Ray)
and the choice between them."""
