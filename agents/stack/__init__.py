"""The local development stack (``userpulse stack up``): Kafka and Redis on
127.0.0.1 without Docker — the stack itself, the programs it runs, the
processes it started and the ports it uses."""
