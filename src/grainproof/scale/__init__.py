"""Scale: benchmarks of the service and the reference builder, the distributed path (Ray) and deployment aids.

Nothing here changes what grainproof computes: the Ray engine runs the same chunk functions as the
single-process path, and the benchmarks call the same services the CLI and the API call.
"""
