"""Google Cloud: the spot-VM launcher and its CLI."""
