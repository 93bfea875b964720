"""The trip saga on Temporal, for the side-by-side benchmark (`python -m bench trips`).

Laid out as Temporal's own samples are: the shared types (`shared`), the workflow
(`workflow`), the activities (`activities`), the worker process (`worker`), the client side
(`starter`), plus the dev server this machine runs (`server`) and the benchmark's handle on
all of them (`system`).
"""
