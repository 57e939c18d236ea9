"""Prefect flows, tasks, deployments and the CLI: the only room that imports Prefect.

No network at run time: Prefect's server-side telemetry is off unless the user turns it on."""
import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# the ephemeral API's default 20 s start-up limit is too short on a loaded 2-core machine (measured: a fresh
# Prefect home timed out under load); 180 s only delays the error of a server that really cannot start
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
