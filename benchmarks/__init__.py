"""Benchmarks for datafast-async: ``python -m benchmarks`` (full) or ``--quick`` (CI smoke run).

Everything they talk to is started here, on 127.0.0.1, in separate processes, and stopped
within a bounded time: a fast HTTP server standing in for the DataFast API, a FastAPI app
under uvicorn, and a load generator. Nothing reaches the internet.
"""
