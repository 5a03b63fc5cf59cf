"""lower: integer Relax graphs → packed, scheduled TIR kernels for a target, compiled and exported."""
