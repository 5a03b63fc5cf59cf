"""Deploy kits: a built model with the TVM runtime and a small C++ runner for the board it targets."""
