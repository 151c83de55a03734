"""The relay: authenticates nodes, fuses their tracks and pushes alerts to subscribers."""
