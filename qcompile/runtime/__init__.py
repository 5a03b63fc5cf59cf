"""runtime: the built artifact (library + sidecar), loading and running it, deploy kits and remote boards."""
