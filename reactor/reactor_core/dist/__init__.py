"""Scale-out: device mesh, sharding rules, multi-host start-up, preemption handling."""
