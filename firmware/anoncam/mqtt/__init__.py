"""MQTT uplink: anonymized snapshots, face-track events, stats, commands, Home Assistant discovery and
an on-disk store-and-forward spool. `sink.MqttSink` wires connection.py (paho, spool, acknowledgements),
publisher.py (what is published) and commands.py (commands -> anoncam.control.Control)."""
