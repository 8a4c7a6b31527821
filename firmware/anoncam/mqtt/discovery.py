"""Home Assistant MQTT discovery: one retained config message per entity, under <discovery prefix>/.

A camera fed by the snapshot topic, sensors for faces in view, fps and latency, a binary sensor for
"face present" (device class occupancy), switches for enabled and snapshots and a select for the
method, all tied to the availability topic and grouped as one device. Each config carries an `origin`
and its entity id twice: `default_entity_id` (Home Assistant 2025.10 and later) and `object_id` (older
releases; ignored from 2026.4), so the ids stay <component>.<prefix>_<camera>_<entity> everywhere."""
from __future__ import annotations

import json
import re

from .. import __version__
from .topics import Topics


def entity_slug(text: str) -> str:
    """The entity id Home Assistant makes of an object id (its slugify, for our characters)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def discovery_messages(ha_prefix: str, prefix: str, camera: str, topics: Topics,
                       methods: list[str], commands: bool = True) -> list[tuple[str, bytes]]:
    """(topic, JSON payload) for every entity (no switches or select when commands are off)."""
    node = f"{prefix.replace('/', '_')}_{camera}"
    device = {"identifiers": [node], "name": f"anoncam {camera}", "manufacturer": "anoncam",
              "model": "anoncam camera", "sw_version": __version__}
    common = {"availability_topic": topics.available, "payload_available": "online",
              "payload_not_available": "offline", "device": device}
    origin = {"name": "anoncam", "sw_version": __version__}
    switch = {"payload_on": "ON", "payload_off": "OFF", "state_on": "ON", "state_off": "OFF"}
    entities = [
        ("camera", "snapshot", {"name": "Snapshot", "topic": topics.snapshot}),
        ("sensor", "faces", {"name": "Faces in view", "state_topic": topics.faces,
                             "state_class": "measurement", "icon": "mdi:face-recognition"}),
        ("sensor", "fps", {"name": "Frame rate", "state_topic": topics.stats, "unit_of_measurement": "fps",
                           "value_template": "{{ value_json.fps }}", "state_class": "measurement"}),
        ("sensor", "latency", {"name": "Frame latency", "state_topic": topics.stats, "unit_of_measurement": "ms",
                               "device_class": "duration", "state_class": "measurement",
                               "value_template": "{{ value_json.latency_ms.p50 }}"}),
        ("binary_sensor", "face", {"name": "Face present", "state_topic": topics.faces,
                                   "value_template": "{{ 'ON' if value | int > 0 else 'OFF' }}",
                                   "payload_on": "ON", "payload_off": "OFF",
                                   "device_class": "occupancy"}),
        ("switch", "enabled", {"name": "Enabled", "command_topic": topics.set("enabled"),
                               "state_topic": topics.state("enabled"), **switch}),
        ("switch", "snapshots", {"name": "Snapshots", "command_topic": topics.set("snapshots"),
                                 "state_topic": topics.state("snapshots"), **switch}),
        ("select", "method", {"name": "Method", "command_topic": topics.set("method"),
                              "state_topic": topics.state("method"), "options": methods}),
    ]
    out = []
    for component, obj, fields in entities:
        if "command_topic" in fields and not commands:
            continue
        oid = f"{node}_{obj}"
        cfg = {**fields, "unique_id": oid, "default_entity_id": f"{component}.{entity_slug(oid)}", "object_id": oid,
               **common, "origin": origin}
        out.append((f"{ha_prefix}/{component}/{node}/{obj}/config", json.dumps(cfg).encode()))
    return out
