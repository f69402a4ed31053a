"""Which deployments this process watches: a partition of the fleet among the processes watching it."""
