"""edge-agent: score local sensor streams with a trained bundle and publish MQTT alerts."""

__version__ = "0.1.0"
