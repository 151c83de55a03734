"""sims: DPRK launch flight physics, national sensors and trackers, and scenarios.

Knows nothing of the relay: it produces truth, measurements and national tracks.
"""
