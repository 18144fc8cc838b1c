"""Where alerts, status and metrics go: MQTT (through the outbox) and stdout."""
