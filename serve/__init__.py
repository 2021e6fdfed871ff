"""Ray Serve app of rankdistill: ``serve run serve/config.yaml`` (see serve/README.md)."""
