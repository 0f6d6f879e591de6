"""Live trading: feeds, recorder, OMS, risk, router, execution algos, inference, monitor API.

Imported as ``gpuflow.live``.
"""
