"""gunicorn settings for the SageMaker hosting contract (read by gunicorn, not imported by the server)."""

# SageMaker sends /ping and /invocations to port 8080.
bind = "0.0.0.0:8080"
# One process holds the model and the GPU. Its threads let /ping answer within 2 s while a
# generation runs; further invocations wait for the GPU lock inside their own time budget.
workers = 1
worker_class = "gthread"
threads = 4
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
