"""Scale-out: sharding plans for real model sizes, checked by compiling with abstract shapes."""
