"""Redis I/O: the key layout of the profile projection, the worker's writer
of it and the synchronous reader of profiles and index sets."""
