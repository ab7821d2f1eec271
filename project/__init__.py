"""Darkroom's Django project: settings, URLs, and the ASGI and WSGI entry points."""

import os

# NumPy's BLAS starts a thread per core as it is imported, 0.1 s of CPU in every process, to split
# matrix products the way a job never needs: each job has one worker thread, and more would only
# take the cores from the jobs on the other threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
