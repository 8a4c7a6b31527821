"""MQTT uplink: anonymized snapshots, face-track events, stats, commands, Home Assistant discovery and
an on-disk store-and-forward spool. The sink itself is `anoncam.mqtt.sink.MqttSink` (imports paho)."""
