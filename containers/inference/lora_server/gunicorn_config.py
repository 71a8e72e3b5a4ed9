"""gunicorn settings for the SageMaker hosting contract (read by gunicorn, not imported by the server)."""

from lora_server.settings import MAX_INVOCATIONS_IN_FLIGHT

# SageMaker sends /ping and /invocations to port 8080.
bind = "0.0.0.0:8080"
# One process holds the model and the GPU. gunicorn's gthread worker runs every request, /ping
# included, on one pool of `threads` threads, and queues a request while all are busy. At most
# MAX_INVOCATIONS_IN_FLIGHT invocations hold a thread for long (one generating, the rest waiting for
# the GPU); any further one is answered 503 in milliseconds. The other threads stay free, so /ping
# answers within SageMaker's 2 s however many invocations arrive.
workers = 1
worker_class = "gthread"
SPARE_THREADS = 5
threads = MAX_INVOCATIONS_IN_FLIGHT + SPARE_THREADS
# The gthread worker reports to the arbiter from its main loop, so a long generation in a thread
# does not trip this; it only bounds a worker that hangs outright.
timeout = 120
# SageMaker sends SIGTERM, then SIGKILL 30 s later: finish in-flight requests within that.
graceful_timeout = 25
# Load the model in the worker, after the fork, so CUDA is initialized in the process that uses it.
preload_app = False
accesslog = None
errorlog = "-"
loglevel = "info"
