"""The lowest layer: settings, domain errors, ids, metrics, asyncio helpers, the token bucket.

Imports nothing of ours.
"""
