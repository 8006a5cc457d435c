"""Ray Serve applications (typed builders) and their serve config YAML."""
