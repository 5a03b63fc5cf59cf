"""quantize: annotate → calibrate → realize, with the operator rules of `ops/` and the report."""
