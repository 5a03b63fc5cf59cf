"""tune: MetaSchedule search, tuning records on disk, schedule transfer between kernels, cold re-timing."""
