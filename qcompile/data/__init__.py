"""data: model inputs from files: image folders, arrays, IDX; calibration samples; run inputs and outputs."""
