"""Run by tests/test_mqtt_ha.py under a Home Assistant install (its own venv): checks anoncam's MQTT
discovery messages the way Home Assistant's MQTT integration reads them.

stdin: JSON [[topic, payload], ...]. stdout: JSON, one result per message: the topic's parts as HA's
TOPIC_MATCHER reads them, whether there is an origin and the error of HA's origin schema and of the platform's DISCOVERY_SCHEMA (None
if valid), the keys that schema drops as unknown, and the entity id HA makes of `object_id`."""
import asyncio
import importlib
import json
import sys
import tempfile

import voluptuous as vol
from homeassistant.components.mqtt.discovery import TOPIC_MATCHER, _replace_all_abbreviations
from homeassistant.components.mqtt.schemas import MQTT_ORIGIN_INFO_SCHEMA
from homeassistant.const import __version__ as ha_version
from homeassistant.core import HomeAssistant
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.entity import async_generate_entity_id


def check(topic: str, payload: dict, prefix: str) -> dict:
    out = {"topic": topic, "error": None, "origin_error": None, "dropped": [], "entity_id": None,
           "default_entity_id_valid": None}
    match = TOPIC_MATCHER.match(topic[len(prefix) + 1:])
    out["parts"] = match.groupdict() if match else None
    payload = dict(payload)
    _replace_all_abbreviations(payload)
    out["origin"] = "origin" in payload
    try:
        if out["origin"]:
            MQTT_ORIGIN_INFO_SCHEMA(payload["origin"])
    except vol.Invalid as e:
        out["origin_error"] = str(e)
    platform = importlib.import_module(f"homeassistant.components.mqtt.{match['component']}")
    try:
        config = platform.DISCOVERY_SCHEMA(payload)
    except vol.Invalid as e:
        out["error"] = str(e)
        return out
    out["dropped"] = sorted(set(payload) - set(config))
    out["device_class"] = config.get("device_class")
    if "object_id" in config:
        out["entity_id"] = async_generate_entity_id(f"{match['component']}.{{}}", config["object_id"], [])
    if "default_entity_id" in payload:
        try:
            cv.entity_id(payload["default_entity_id"])
            out["default_entity_id_valid"] = True
        except vol.Invalid:
            out["default_entity_id_valid"] = False
    return out


async def main(messages: list, prefix: str) -> dict:
    with tempfile.TemporaryDirectory() as config_dir:
        HomeAssistant(config_dir)  # templates in the schemas are checked against a running instance
        return {"ha_version": ha_version, "results": [check(t, json.loads(p), prefix) for t, p in messages]}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin), sys.argv[1] if len(sys.argv) > 1 else "homeassistant"))))
