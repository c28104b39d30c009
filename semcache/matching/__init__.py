"""What decides a hit beyond the threshold: lexical guards, the cross-encoder verifier, learned
(adaptive) thresholds, and the bounds they are certified with."""
